"""Closed invoices never change, enforced by the database itself: a finalized, voided or
skipped invoice keeps its amounts, number, period and lines; a finalized one may only be
voided (or have its payment status move). Services check first and say why; these triggers
make sure nothing else (a shell, a bulk update, a bug) gets round them.

On SQLite, deleting is left to the services: its triggers cannot tell a DELETE from the
test runner's flush, where PostgreSQL's TRUNCATE fires no row trigger."""

from django.db import migrations

FROZEN = (
    "currency",
    "subtotal",
    "total",
    "period_start",
    "period_end",
    "invoice_number",
    "finalized_at",
    "usage_fence",
    "customer_id",
    "subscription_id",
    "billing_reason",
)
STATUS_MOVES = (
    "NEW.invoice_status <> OLD.invoice_status "
    "AND NOT (OLD.invoice_status = 'FINALIZED' AND NEW.invoice_status = 'VOIDED')"
)
CHANGED = " OR ".join(f"NEW.{c} IS DISTINCT FROM OLD.{c}" for c in FROZEN)
INVOICE_MESSAGE = "A closed invoice cannot change: only a finalized one can be voided."
LINE_MESSAGE = "The lines of a closed invoice cannot change."

POSTGRESQL = f"""
CREATE FUNCTION tally_invoice_frozen() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'DELETE' THEN
        IF OLD.invoice_status <> 'DRAFT' THEN
            RAISE EXCEPTION '{INVOICE_MESSAGE}' USING ERRCODE = 'integrity_constraint_violation';
        END IF;
        RETURN OLD;
    END IF;
    IF OLD.invoice_status <> 'DRAFT' AND (({STATUS_MOVES}) OR {CHANGED}) THEN
        RAISE EXCEPTION '{INVOICE_MESSAGE}' USING ERRCODE = 'integrity_constraint_violation';
    END IF;
    RETURN NEW;
END $$;
CREATE TRIGGER tally_invoice_frozen BEFORE UPDATE OR DELETE ON billing_invoice
    FOR EACH ROW EXECUTE FUNCTION tally_invoice_frozen();

CREATE FUNCTION tally_invoice_line_frozen() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    status text;
BEGIN
    SELECT invoice_status INTO status FROM billing_invoice
        WHERE id = CASE WHEN TG_OP = 'DELETE' THEN OLD.invoice_id ELSE NEW.invoice_id END;
    IF status IS NOT NULL AND status <> 'DRAFT' THEN
        RAISE EXCEPTION '{LINE_MESSAGE}' USING ERRCODE = 'integrity_constraint_violation';
    END IF;
    IF TG_OP = 'DELETE' THEN RETURN OLD; END IF;
    RETURN NEW;
END $$;
CREATE TRIGGER tally_invoice_line_frozen BEFORE INSERT OR UPDATE OR DELETE
    ON billing_invoicelineitem FOR EACH ROW EXECUTE FUNCTION tally_invoice_line_frozen();
"""
POSTGRESQL_REVERSE = """
DROP TRIGGER tally_invoice_line_frozen ON billing_invoicelineitem;
DROP FUNCTION tally_invoice_line_frozen();
DROP TRIGGER tally_invoice_frozen ON billing_invoice;
DROP FUNCTION tally_invoice_frozen();
"""


def _line_of_closed(row: str) -> str:
    return (
        f"(SELECT invoice_status FROM billing_invoice WHERE id = {row}.invoice_id) <> 'DRAFT'"
    )


SQLITE = [
    f"""CREATE TRIGGER tally_invoice_frozen_update BEFORE UPDATE ON billing_invoice
    WHEN OLD.invoice_status <> 'DRAFT' AND (({STATUS_MOVES}) OR
    {CHANGED.replace("IS DISTINCT FROM", "IS NOT")})
    BEGIN SELECT RAISE(ABORT, '{INVOICE_MESSAGE}'); END""",
    *(
        f"""CREATE TRIGGER tally_invoice_line_frozen_{op.lower()} BEFORE {op}
        ON billing_invoicelineitem WHEN {_line_of_closed(row)}
        BEGIN SELECT RAISE(ABORT, '{LINE_MESSAGE}'); END"""
        for op, row in (("INSERT", "NEW"), ("UPDATE", "OLD"))
    ),
]
SQLITE_REVERSE = [
    f"DROP TRIGGER {name}"
    for name in (
        "tally_invoice_frozen_update",
        "tally_invoice_line_frozen_insert",
        "tally_invoice_line_frozen_update",
    )
]


def _run(statements: dict):
    def run(apps, schema_editor):
        for sql in statements.get(schema_editor.connection.vendor, []):
            schema_editor.execute(sql)

    return run


class Migration(migrations.Migration):
    dependencies = [("billing", "0003_backfill_snapshots_and_fences")]

    operations = [
        migrations.RunPython(
            _run({"postgresql": [POSTGRESQL], "sqlite": SQLITE}),
            _run({"postgresql": [POSTGRESQL_REVERSE], "sqlite": SQLITE_REVERSE}),
        )
    ]
