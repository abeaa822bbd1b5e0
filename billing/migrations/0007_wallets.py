"""Wallets, their ledger and credit grants; invoices gain prepaid credits and payments.

SQLite adds the invoice columns by rebuilding the table, which the closed-invoice triggers
(0004) would refuse mid-rebuild: they are dropped first and put back after, now also
freezing the invoice type and the prepaid credits applied."""

from importlib import import_module

import catalog.ids
import datetime
import django.db.models.deletion
from decimal import Decimal
from django.db import migrations, models


frozen = import_module("billing.migrations.0004_closed_invoices_frozen")
NEW_FROZEN = (*frozen.FROZEN, "invoice_type", "total_prepaid_credits_applied")
NEW_CHANGED = " OR ".join(f"NEW.{c} IS DISTINCT FROM OLD.{c}" for c in NEW_FROZEN)


def _postgresql_function(changed: str) -> str:
    function = frozen.POSTGRESQL.split("CREATE TRIGGER tally_invoice_frozen")[0]
    return function.replace("CREATE FUNCTION", "CREATE OR REPLACE FUNCTION").replace(
        frozen.CHANGED, changed
    )


def _sqlite(changed: str) -> list[str]:
    old = frozen.CHANGED.replace("IS DISTINCT FROM", "IS NOT")
    return [
        frozen.SQLITE[0].replace(old, changed.replace("IS DISTINCT FROM", "IS NOT")),
        *frozen.SQLITE[1:],
    ]


NO_TRIGGERS = {"sqlite": frozen.SQLITE_REVERSE}
OLD_TRIGGERS = {"sqlite": frozen.SQLITE, "postgresql": [_postgresql_function(frozen.CHANGED)]}
NEW_TRIGGERS = {"sqlite": _sqlite(NEW_CHANGED), "postgresql": [_postgresql_function(NEW_CHANGED)]}


class Migration(migrations.Migration):

    dependencies = [
        ('billing', '0006_invoice_cycle_parts'),
        ('catalog', '0003_plan_version'),
        ('metering', '0007_customer_address'),
    ]

    operations = [
        migrations.RunPython(frozen._run(NO_TRIGGERS), frozen._run(OLD_TRIGGERS)),
        migrations.AddField(
            model_name='invoice',
            name='amount_paid',
            field=models.DecimalField(decimal_places=12, default=Decimal('0'), max_digits=28),
        ),
        migrations.AddField(
            model_name='invoice',
            name='invoice_type',
            field=models.CharField(choices=[('SUBSCRIPTION', 'Subscription'), ('CREDIT', 'Credit')], default='SUBSCRIPTION', max_length=16),
        ),
        migrations.AddField(
            model_name='invoice',
            name='paid_at',
            field=models.DateTimeField(blank=True, null=True),
        ),
        migrations.AddField(
            model_name='invoice',
            name='total_prepaid_credits_applied',
            field=models.DecimalField(decimal_places=12, default=Decimal('0'), max_digits=28),
        ),
        migrations.AlterField(
            model_name='invoice',
            name='billing_reason',
            field=models.CharField(choices=[('SUBSCRIPTION_CREATE', 'Subscription Create'), ('SUBSCRIPTION_CYCLE', 'Subscription Cycle'), ('MANUAL', 'Manual')], default='SUBSCRIPTION_CYCLE', max_length=32),
        ),
        migrations.CreateModel(
            name='CreditGrant',
            fields=[
                ('id', models.CharField(default=catalog.ids.id_factory('cg'), editable=False, max_length=40, primary_key=True, serialize=False)),
                ('name', models.CharField(max_length=255)),
                ('scope', models.CharField(choices=[('PLAN', 'Plan'), ('SUBSCRIPTION', 'Subscription')], default='PLAN', max_length=16)),
                ('credits', models.DecimalField(decimal_places=12, max_digits=28)),
                ('cadence', models.CharField(choices=[('ONETIME', 'Onetime'), ('RECURRING', 'Recurring')], max_length=16)),
                ('expiration_type', models.CharField(choices=[('NEVER', 'Never'), ('DURATION', 'Duration'), ('BILLING_CYCLE', 'Billing Cycle')], default='NEVER', max_length=16)),
                ('expiration_duration', models.PositiveIntegerField(blank=True, null=True)),
                ('expiration_duration_unit', models.CharField(blank=True, choices=[('DAY', 'Day'), ('WEEK', 'Week'), ('MONTH', 'Month'), ('YEAR', 'Year')], max_length=8)),
                ('priority', models.PositiveIntegerField(blank=True, null=True)),
                ('status', models.CharField(choices=[('published', 'Published'), ('archived', 'Archived')], default='published', max_length=16)),
                ('metadata', models.JSONField(blank=True, default=dict)),
                ('created_at', models.DateTimeField(auto_now_add=True)),
                ('updated_at', models.DateTimeField(auto_now=True)),
                ('plan', models.ForeignKey(blank=True, null=True, on_delete=django.db.models.deletion.PROTECT, related_name='credit_grants', to='catalog.plan')),
                ('subscription', models.ForeignKey(blank=True, null=True, on_delete=django.db.models.deletion.PROTECT, related_name='credit_grants', to='billing.subscription')),
            ],
            options={
                'ordering': ['created_at'],
            },
        ),
        migrations.CreateModel(
            name='Wallet',
            fields=[
                ('id', models.CharField(default=catalog.ids.id_factory('wallet'), editable=False, max_length=40, primary_key=True, serialize=False)),
                ('currency', models.CharField(max_length=3)),
                ('wallet_type', models.CharField(choices=[('PRE_PAID', 'Pre Paid'), ('POST_PAID', 'Post Paid')], default='PRE_PAID', max_length=16)),
                ('wallet_status', models.CharField(choices=[('active', 'Active'), ('frozen', 'Frozen'), ('closed', 'Closed')], default='active', max_length=16)),
                ('name', models.CharField(blank=True, max_length=255)),
                ('description', models.TextField(blank=True)),
                ('conversion_rate', models.DecimalField(decimal_places=12, default=Decimal('1'), help_text='Currency units per credit.', max_digits=28)),
                ('auto_topup_enabled', models.BooleanField(default=False)),
                ('auto_topup_threshold', models.DecimalField(blank=True, decimal_places=12, max_digits=28, null=True)),
                ('auto_topup_amount', models.DecimalField(blank=True, decimal_places=12, max_digits=28, null=True)),
                ('auto_topup_invoicing', models.BooleanField(default=False, help_text='Top up through a purchase invoice; credits come when it is paid.')),
                ('auto_topup_cooldown', models.DurationField(default=datetime.timedelta(0))),
                ('last_auto_topup_at', models.DateTimeField(blank=True, editable=False, null=True)),
                ('alert_settings', models.JSONField(blank=True, default=dict)),
                ('alert_state', models.CharField(choices=[('ok', 'Ok'), ('info', 'Info'), ('warning', 'Warning'), ('in_alarm', 'In Alarm')], default='ok', editable=False, max_length=16)),
                ('metadata', models.JSONField(blank=True, default=dict)),
                ('created_at', models.DateTimeField(auto_now_add=True)),
                ('updated_at', models.DateTimeField(auto_now=True)),
                ('customer', models.ForeignKey(on_delete=django.db.models.deletion.PROTECT, related_name='wallets', to='metering.customer')),
            ],
            options={
                'ordering': ['-created_at'],
            },
        ),
        migrations.CreateModel(
            name='WalletTransaction',
            fields=[
                ('id', models.CharField(default=catalog.ids.id_factory('wtxn'), editable=False, max_length=40, primary_key=True, serialize=False)),
                ('type', models.CharField(choices=[('credit', 'Credit'), ('debit', 'Debit')], max_length=8)),
                ('transaction_status', models.CharField(choices=[('pending', 'Pending'), ('completed', 'Completed'), ('failed', 'Failed')], default='completed', max_length=16)),
                ('transaction_reason', models.CharField(choices=[('INVOICE_PAYMENT', 'Invoice Payment'), ('FREE_CREDIT_GRANT', 'Free Credit Grant'), ('SUBSCRIPTION_CREDIT_GRANT', 'Subscription Credit Grant'), ('PURCHASED_CREDIT_INVOICED', 'Purchased Credit Invoiced'), ('PURCHASED_CREDIT_DIRECT', 'Purchased Credit Direct'), ('PURCHASED_CREDIT_BONUS', 'Purchased Credit Bonus'), ('CREDIT_EXPIRED', 'Credit Expired'), ('WALLET_TERMINATION', 'Wallet Termination'), ('MANUAL_BALANCE_DEBIT', 'Manual Balance Debit'), ('INVOICE_VOID_REFUND', 'Invoice Void Refund')], max_length=32)),
                ('credit_amount', models.DecimalField(decimal_places=12, max_digits=28)),
                ('amount', models.DecimalField(decimal_places=12, max_digits=28)),
                ('priority', models.PositiveIntegerField(blank=True, null=True)),
                ('expiry_date', models.DateTimeField(blank=True, null=True)),
                ('idempotency_key', models.CharField(blank=True, max_length=255, null=True)),
                ('description', models.TextField(blank=True)),
                ('metadata', models.JSONField(blank=True, default=dict)),
                ('created_at', models.DateTimeField(auto_now_add=True)),
                ('updated_at', models.DateTimeField(auto_now=True)),
                ('invoice', models.ForeignKey(blank=True, null=True, on_delete=django.db.models.deletion.PROTECT, related_name='wallet_transactions', to='billing.invoice')),
                ('wallet', models.ForeignKey(on_delete=django.db.models.deletion.PROTECT, related_name='transactions', to='billing.wallet')),
            ],
            options={
                'ordering': ['-created_at', '-id'],
            },
        ),
        migrations.CreateModel(
            name='CreditGrantApplication',
            fields=[
                ('id', models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name='ID')),
                ('period_start', models.DateTimeField()),
                ('period_end', models.DateTimeField()),
                ('created_at', models.DateTimeField(auto_now_add=True)),
                ('grant', models.ForeignKey(on_delete=django.db.models.deletion.PROTECT, related_name='applications', to='billing.creditgrant')),
                ('subscription', models.ForeignKey(on_delete=django.db.models.deletion.PROTECT, related_name='credit_grant_applications', to='billing.subscription')),
                ('transaction', models.OneToOneField(on_delete=django.db.models.deletion.PROTECT, related_name='grant_application', to='billing.wallettransaction')),
            ],
        ),
        migrations.CreateModel(
            name='CreditConsumption',
            fields=[
                ('id', models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name='ID')),
                ('credits', models.DecimalField(decimal_places=12, max_digits=28)),
                ('credit', models.ForeignKey(on_delete=django.db.models.deletion.PROTECT, related_name='consumed_by', to='billing.wallettransaction')),
                ('debit', models.ForeignKey(on_delete=django.db.models.deletion.PROTECT, related_name='consumptions', to='billing.wallettransaction')),
            ],
        ),
        migrations.AddConstraint(
            model_name='creditgrant',
            constraint=models.CheckConstraint(condition=models.Q(('credits__gt', 0)), name='credit_grant_positive'),
        ),
        migrations.AddConstraint(
            model_name='creditgrant',
            constraint=models.CheckConstraint(condition=models.Q(models.Q(('plan__isnull', False), ('scope', 'PLAN'), ('subscription__isnull', True)), models.Q(('plan__isnull', True), ('scope', 'SUBSCRIPTION'), ('subscription__isnull', False)), _connector='OR'), name='credit_grant_scope_target'),
        ),
        migrations.AddConstraint(
            model_name='wallet',
            constraint=models.UniqueConstraint(condition=models.Q(('wallet_status', 'closed'), _negated=True), fields=('customer', 'currency'), name='one_open_wallet_per_customer_currency', violation_error_message='The customer already has a wallet in this currency.'),
        ),
        migrations.AddConstraint(
            model_name='wallet',
            constraint=models.CheckConstraint(condition=models.Q(('conversion_rate__gt', 0)), name='wallet_conversion_rate_positive'),
        ),
        migrations.AddIndex(
            model_name='wallettransaction',
            index=models.Index(fields=['wallet', 'type', 'transaction_status'], name='wtxn_blocks_idx'),
        ),
        migrations.AddConstraint(
            model_name='wallettransaction',
            constraint=models.UniqueConstraint(fields=('wallet', 'idempotency_key'), name='one_transaction_per_idempotency_key'),
        ),
        migrations.AddConstraint(
            model_name='wallettransaction',
            constraint=models.CheckConstraint(condition=models.Q(('credit_amount__gt', 0)), name='wallet_transaction_positive'),
        ),
        migrations.AddConstraint(
            model_name='creditgrantapplication',
            constraint=models.UniqueConstraint(fields=('grant', 'subscription', 'period_start'), name='one_grant_per_period'),
        ),
        migrations.AddConstraint(
            model_name='creditconsumption',
            constraint=models.CheckConstraint(condition=models.Q(('credits__gt', 0)), name='credit_consumption_positive'),
        ),
        migrations.AddConstraint(
            model_name='creditconsumption',
            constraint=models.UniqueConstraint(fields=('debit', 'credit'), name='one_consumption_per_pair'),
        ),
        migrations.RunPython(frozen._run(NEW_TRIGGERS), frozen._run(NO_TRIGGERS)),
    ]
