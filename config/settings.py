"""One settings module, read from the environment. See README.md for every variable."""

import re
from datetime import timedelta
from pathlib import Path

import environ
from django.core.exceptions import ImproperlyConfigured

BASE_DIR = Path(__file__).resolve().parent.parent

env = environ.Env()

DEBUG = env.bool("DJANGO_DEBUG", default=True)
SECRET_KEY = env.str("DJANGO_SECRET_KEY", default="dev-only-insecure-secret-key-change-me")
ALLOWED_HOSTS = env.list("DJANGO_ALLOWED_HOSTS", default=["127.0.0.1", "localhost", "[::1]"])
CSRF_TRUSTED_ORIGINS = env.list("DJANGO_CSRF_TRUSTED_ORIGINS", default=[])

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.humanize",
    "whitenoise.runserver_nostatic",
    "django.contrib.staticfiles",
    "rest_framework",
    "django_filters",
    "drf_spectacular",
    "drf_spectacular_sidecar",
    "django_htmx",
    "axes",
    "solo",
    "catalog",
    "metering",
    "billing",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django_htmx.middleware.HtmxMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "axes.middleware.AxesMiddleware",
]

ROOT_URLCONF = "config.urls"
WSGI_APPLICATION = "config.wsgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ],
        },
    },
]

DATABASES = {"default": env.db("DATABASE_URL", default=f"sqlite:///{BASE_DIR / 'db.sqlite3'}")}
DATABASES["default"]["CONN_MAX_AGE"] = env.int("DJANGO_CONN_MAX_AGE", default=60)
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]

# Sign-in lockout (django-axes), on the admin's and the portal's sign-in forms alike:
# TALLY_LOGIN_FAILURES wrong passwords in a row for one username from one IP address lock
# that pair out for TALLY_LOGIN_COOLOFF_MINUTES. A successful sign-in resets the count.
AUTHENTICATION_BACKENDS = [
    "config.security.LoginLockoutBackend",
    "django.contrib.auth.backends.ModelBackend",
]
AXES_FAILURE_LIMIT = env.int("TALLY_LOGIN_FAILURES", default=10)
AXES_COOLOFF_TIME = timedelta(minutes=env.int("TALLY_LOGIN_COOLOFF_MINUTES", default=15))
AXES_LOCKOUT_PARAMETERS = [["username", "ip_address"]]
AXES_USERNAME_CALLABLE = "config.security.login_username"
AXES_RESET_ON_SUCCESS = True
AXES_LOCKOUT_TEMPLATE = "locked_out.html"
AXES_HTTP_RESPONSE_CODE = 429
AXES_VERBOSE = False  # no banner on every manage.py command

LOGIN_URL = "portal:login"
LOGIN_REDIRECT_URL = "portal:home"

# Email (the portal's password reset): EMAIL_URL as django-environ reads it, such as
# smtp+tls://user:password@smtp.example.com:587; the console by default.
vars().update(env.email_url("EMAIL_URL", default="consolemail://"))
DEFAULT_FROM_EMAIL = env.str("DEFAULT_FROM_EMAIL", default="Tally <billing@localhost>")
# The operator's copy of every alert email (alerts go to the customer's address too).
TALLY_ALERTS_EMAIL = env.str("TALLY_ALERTS_EMAIL", default="")

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

STATIC_URL = "static/"
STATIC_ROOT = BASE_DIR / "staticfiles"
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {
        "BACKEND": "django.contrib.staticfiles.storage.StaticFilesStorage"
        if DEBUG
        else "whitenoise.storage.CompressedManifestStaticFilesStorage"
    },
}

# Security: strict by default whenever DEBUG is off.
SECURE_PROXY_SSL_HEADER = (
    ("HTTP_X_FORWARDED_PROTO", "https")
    if env.bool("DJANGO_BEHIND_TLS_PROXY", default=False)
    else None
)
SECURE_SSL_REDIRECT = env.bool("DJANGO_SECURE_SSL_REDIRECT", default=not DEBUG)
SESSION_COOKIE_SECURE = not DEBUG
CSRF_COOKIE_SECURE = not DEBUG
SECURE_HSTS_SECONDS = env.int("DJANGO_HSTS_SECONDS", default=0 if DEBUG else 31536000)
SECURE_HSTS_INCLUDE_SUBDOMAINS = not DEBUG
SECURE_HSTS_PRELOAD = not DEBUG
SECURE_CONTENT_TYPE_NOSNIFF = True
X_FRAME_OPTIONS = "DENY"

# Celery: without a broker, tasks run in-process.
CELERY_BROKER_URL = env.str("CELERY_BROKER_URL", default="")
CELERY_TASK_ALWAYS_EAGER = not CELERY_BROKER_URL
CELERY_TASK_EAGER_PROPAGATES = True
CELERY_RESULT_BACKEND = None
CELERY_TASK_IGNORE_RESULT = True
CELERY_TASK_ACKS_LATE = True
CELERY_TASK_REJECT_ON_WORKER_LOST = True
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
CELERY_TIMEZONE = "UTC"

REST_FRAMEWORK = {
    "DEFAULT_SCHEMA_CLASS": "config.schema.AutoSchema",
    "DEFAULT_FILTER_BACKENDS": ["django_filters.rest_framework.DjangoFilterBackend"],
    "DEFAULT_AUTHENTICATION_CLASSES": ["metering.auth.ApiKeyAuthentication"],
    "DEFAULT_PERMISSION_CLASSES": ["metering.auth.HasApiKey"],
    "DEFAULT_PAGINATION_CLASS": "config.api.Pagination",
    "PAGE_SIZE": 50,
    "DEFAULT_RENDERER_CLASSES": ["rest_framework.renderers.JSONRenderer"],
    "DEFAULT_PARSER_CLASSES": ["config.api.JSONParser"],
    "EXCEPTION_HANDLER": "config.api.api_exception_handler",
    "UNAUTHENTICATED_USER": None,
    "COERCE_DECIMAL_TO_STRING": True,
    "DEFAULT_THROTTLE_CLASSES": ["config.security.ApiKeyRateThrottle"],
}
# Requests per API key: "100000/min" (s, min, h or day), or "off". Counted in the cache.
TALLY_API_RATE = env.str("TALLY_API_RATE", default="100000/min")
if not re.fullmatch(r"(?i)off|none|[1-9][0-9]*/(s|m|h|d)[a-z]*", TALLY_API_RATE.strip()):
    raise ImproperlyConfigured(f"TALLY_API_RATE={TALLY_API_RATE!r}: use e.g. 100000/min or off.")

# Bulk ingestion takes up to 1,000 events; bodies beyond this are refused with 413.
DATA_UPLOAD_MAX_MEMORY_SIZE = env.int("TALLY_MAX_BODY_BYTES", default=5 * 1024 * 1024)

# Invoices. The issuer's details where the admin's "Invoice issuer" leaves them blank (address
# lines separated by ";"), and the days from finalizing an invoice to its due date.
TALLY_ISSUER_NAME = env.str("TALLY_ISSUER_NAME", default="")
TALLY_ISSUER_ADDRESS = env.str("TALLY_ISSUER_ADDRESS", default="").split(";")
TALLY_ISSUER_EMAIL = env.str("TALLY_ISSUER_EMAIL", default="")
TALLY_ISSUER_TAX_ID = env.str("TALLY_ISSUER_TAX_ID", default="")
TALLY_PAYMENT_TERMS_DAYS = env.int("TALLY_PAYMENT_TERMS_DAYS", default=30)
if not 0 <= TALLY_PAYMENT_TERMS_DAYS <= 365:
    raise ImproperlyConfigured("TALLY_PAYMENT_TERMS_DAYS must be a whole number from 0 to 365.")

# Webhooks: a failed delivery is retried with exponential backoff (from the base delay, with
# jitter, at most an hour apart) until this window from the event has passed, then marked failed.
TALLY_WEBHOOK_RETRY_WINDOW_HOURS = env.float("TALLY_WEBHOOK_RETRY_WINDOW_HOURS", default=24)
TALLY_WEBHOOK_RETRY_BASE_SECONDS = env.float("TALLY_WEBHOOK_RETRY_BASE_SECONDS", default=5)
TALLY_WEBHOOK_TIMEOUT_SECONDS = env.float("TALLY_WEBHOOK_TIMEOUT_SECONDS", default=10)
if not (
    0 < TALLY_WEBHOOK_RETRY_WINDOW_HOURS <= 24 * 30
    and 0 < TALLY_WEBHOOK_RETRY_BASE_SECONDS <= 3600
    and 0 < TALLY_WEBHOOK_TIMEOUT_SECONDS <= 60
):
    raise ImproperlyConfigured(
        "TALLY_WEBHOOK_RETRY_WINDOW_HOURS must be over 0 and at most 720, "
        "TALLY_WEBHOOK_RETRY_BASE_SECONDS over 0 and at most 3600, "
        "TALLY_WEBHOOK_TIMEOUT_SECONDS over 0 and at most 60."
    )

SPECTACULAR_SETTINGS = {
    "TITLE": "Tally API",
    # The first page an integrating engineer reads; tests/api/test_docs.py runs its curls.
    "DESCRIPTION": (BASE_DIR / "config" / "api_guide.md").read_text(encoding="utf-8"),
    "VERSION": "1",
    "SERVE_INCLUDE_SCHEMA": False,
    # Swagger UI's assets come from a package, so the docs work without a CDN.
    "SWAGGER_UI_DIST": "SIDECAR",
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    "COMPONENT_SPLIT_REQUEST": True,
    "APPEND_COMPONENTS": {
        "securitySchemes": {"ApiKeyAuth": {"type": "apiKey", "in": "header", "name": "x-api-key"}}
    },
    "SECURITY": [{"ApiKeyAuth": []}],
    "ENUM_NAME_OVERRIDES": {
        "FeatureTypeEnum": "catalog.models.Feature.Type",
        "PriceTypeEnum": "catalog.models.Price.Type",
        "AggregationTypeEnum": "catalog.models.Meter.Aggregation",
        "BillingPeriodEnum": "catalog.models.BillingPeriod",
        "BatchItemStatusEnum": ["accepted", "duplicate", "rejected"],
        "PublishedStatusEnum": ["published"],
        "WalletStatusEnum": "billing.models.Wallet.Status",
        "WalletTransactionTypeEnum": "billing.models.WalletTransaction.Type",
        "WalletTransactionStatusEnum": "billing.models.WalletTransaction.Status",
        "WalletTransactionReasonEnum": "billing.models.WalletTransaction.Reason",
        "CreditGrantStatusEnum": "billing.models.CreditGrant.Status",
        "AlertRuleEntityEnum": ["subscription", "feature"],
        "PriceEntityTypeEnum": ["PLAN"],
        "AlertEntityEnum": "billing.models.AlertEntity",
        "AlertStateEnum": "billing.models.AlertState",
        "AlertTypeEnum": "billing.models.AlertType",
    },
}

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "handlers": {"console": {"class": "logging.StreamHandler"}},
    "root": {"handlers": ["console"], "level": env.str("DJANGO_LOG_LEVEL", default="INFO")},
    "loggers": {"weasyprint.progress": {"level": "WARNING"}},  # a line per PDF step otherwise
}

CELERY_BEAT_SCHEDULE = {
    "rollups-refresh": {"task": "metering.tasks.rollups_refresh", "schedule": 30.0},
    "rollups-fold": {"task": "metering.tasks.rollups_fold_task", "schedule": 5.0},
    "periods-close": {"task": "billing.tasks.periods_close", "schedule": 60.0},
    "drafts-refresh": {"task": "billing.tasks.drafts_refresh", "schedule": 60.0},
    "credits-expire": {"task": "billing.tasks.credits_expire", "schedule": 60.0},
    "emails-sweep": {"task": "billing.tasks.emails_sweep", "schedule": 60.0},
    "webhooks-sweep": {"task": "billing.webhook_tasks.webhooks_sweep", "schedule": 15.0},
}
# An unacknowledged task (its worker died) is redelivered after this many seconds.
_VISIBILITY = env.int("CELERY_VISIBILITY_TIMEOUT", default=60)
CELERY_BROKER_TRANSPORT_OPTIONS = {
    "visibility_timeout": _VISIBILITY,
    "unacked_restore_interval": max(1, _VISIBILITY // 6),
    "unacked_restore_throttle": 1,
}

# The cache coalesces invoice recomputes; it must be shared by web and workers.
CACHE_URL = env.str("CACHE_URL", default="")
if not CACHE_URL and CELERY_BROKER_URL.startswith("redis"):
    CACHE_URL = CELERY_BROKER_URL
if CELERY_BROKER_URL and not CACHE_URL.startswith(("redis://", "rediss://")):
    # Requests for background work live in the cache; each process's own would lose them.
    raise ImproperlyConfigured(
        "CELERY_BROKER_URL is set, so CACHE_URL must name a Redis shared by web processes "
        "and workers (it defaults to the broker's URL when the broker is Redis)."
    )
CACHES = {
    "default": {"BACKEND": "django.core.cache.backends.redis.RedisCache", "LOCATION": CACHE_URL}
    if CACHE_URL
    else {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"}
}
