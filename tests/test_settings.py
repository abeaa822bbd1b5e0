import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def _manage(*args, **env) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "manage.py", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        env={**{k: v for k, v in os.environ.items() if k != "DJANGO_ALLOW_ASYNC_UNSAFE"}, **env},
        timeout=120,
    )


def test_deploy_check_is_clean_with_debug_off_and_a_real_secret():
    result = _manage(
        "check",
        "--deploy",
        "--fail-level",
        "WARNING",
        DJANGO_DEBUG="false",
        DJANGO_SECRET_KEY="x" * 20 + "a-real-long-random-production-secret-key",
        DJANGO_ALLOWED_HOSTS="billing.example.com",
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_ensure_admin_refuses_to_run_in_production():
    result = _manage("ensure_admin", DJANGO_DEBUG="false", DJANGO_SECRET_KEY="y" * 60)
    assert result.returncode != 0
    assert "for development" in result.stderr
