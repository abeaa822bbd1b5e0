"""The import contracts of pyproject.toml's ``[tool.importlinter]``, enforced by ``make test``:
catalog <- metering <- billing, no import circles inside an app, and only metering's storage
layer speaks psycopg."""

import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_import_contracts_are_kept():
    lint_imports = shutil.which("lint-imports", path=str(Path(sys.executable).parent))
    assert lint_imports, "import-linter is not installed: make install"
    result = subprocess.run(
        [lint_imports, "--no-cache", "--no-logo"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_only_the_storage_layer_asks_which_database_it_runs_on():
    offenders = []
    for app in ("catalog", "metering", "billing"):
        for path in sorted((ROOT / app).rglob("*.py")):
            relative = path.relative_to(ROOT)
            if "migrations" in relative.parts or relative.parts[:2] == ("metering", "storage"):
                continue
            text = path.read_text()
            for needle in ("connection.vendor", "cursor("):
                if needle in text:
                    offenders.append(f"{relative}: {needle}")
    assert offenders == []


def test_metering_spells_no_aggregation_by_hand():
    from catalog import names
    from catalog.models import Meter

    spelled = {
        names.COUNT,
        names.SUM,
        names.AVG,
        names.MAX,
        names.COUNT_UNIQUE,
        names.LATEST,
        names.SUM_WITH_MULTIPLIER,
        names.WEIGHTED_SUM,
    }
    assert set(Meter.Aggregation.values) == spelled
    offenders = [
        f"{path.relative_to(ROOT)}: {name}"
        for path in sorted((ROOT / "metering").rglob("*.py"))
        if "migrations" not in path.parts
        for name in spelled
        if f'"{name}"' in path.read_text()
    ]
    assert offenders == []
