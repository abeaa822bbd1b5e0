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


def test_a_broker_without_a_shared_redis_cache_is_refused():
    """Pending requests for background work live in the cache: one per process would lose
    them, so an amqp broker needs CACHE_URL."""
    result = _manage("check", CELERY_BROKER_URL="amqp://guest@127.0.0.1//", CACHE_URL="")
    assert result.returncode != 0 and "CACHE_URL must name a Redis" in result.stderr
    result = _manage(
        "check", CELERY_BROKER_URL="amqp://guest@127.0.0.1//", CACHE_URL="redis://127.0.0.1/3"
    )
    assert result.returncode == 0, result.stderr


def test_a_webhook_retry_window_out_of_bounds_is_refused():
    result = _manage("check", TALLY_WEBHOOK_RETRY_WINDOW_HOURS="0")
    assert result.returncode != 0
    assert "TALLY_WEBHOOK_RETRY_WINDOW_HOURS must be over 0" in result.stderr
    assert _manage("check", TALLY_WEBHOOK_RETRY_WINDOW_HOURS="48").returncode == 0
