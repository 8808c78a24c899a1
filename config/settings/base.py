"""Every setting comes from the environment; the defaults run on one machine with no servers."""

import os
from datetime import timedelta
from pathlib import Path

import environ
from csp.constants import NONE, SELF
from django.core.exceptions import ImproperlyConfigured

from journeys.delivery_rules import check_timezone, parse_frequency_cap

BASE_DIR = Path(__file__).resolve().parent.parent.parent
# Where the embedded default keeps its state: the SQLite file, the broker's folders, beat's
# schedule, the file cache and collected static files. VAR_DIR moves all of it at once, so
# that a second instance on one checkout (a test of bin/run, say) shares nothing.
VAR_DIR = Path(os.environ.get("VAR_DIR") or BASE_DIR / "var")

env = environ.Env()
environ.Env.read_env(BASE_DIR / ".env", overwrite=False)

DEBUG = env.bool("DEBUG", default=False)
# The default starts with "django-insecure-" so that `check --deploy` refuses to pass without
# a real key from the environment.
DEVELOPMENT_SECRET_KEY = "django-insecure-dev-only-secret-key-change-me-in-production"
# bin/run keeps a key of the installation's own there, so that `manage.py` run by hand on the
# same checkout signs with the same key as the web server bin/run started.
LOCAL_SECRET_KEY_FILE = VAR_DIR / "secret-key.txt"
SECRET_KEY = env.str(
    "SECRET_KEY",
    default=LOCAL_SECRET_KEY_FILE.read_text().strip()
    if LOCAL_SECRET_KEY_FILE.is_file()
    else DEVELOPMENT_SECRET_KEY,
)
if not DEBUG and SECRET_KEY in ("", DEVELOPMENT_SECRET_KEY):
    # The development key is in this public repository: anyone could sign sessions, password
    # reset links and messages with it. Refuse to start rather than run with it.
    raise ImproperlyConfigured(
        "SECRET_KEY must be set in the environment (or .env) when DEBUG is off: "
        "the development key is public. Generate one with "
        "python3 -c 'import secrets; print(secrets.token_urlsafe(50))', "
        "or set DEBUG=1 on a development machine (bin/run makes a key of its own)."
    )
ALLOWED_HOSTS = env.list("ALLOWED_HOSTS", default=["localhost", "127.0.0.1", "[::1]"])
CSRF_TRUSTED_ORIGINS = env.list("CSRF_TRUSTED_ORIGINS", default=[])

INSTALLED_APPS = [
    "config.apps.WaypointAdminConfig",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "django_htmx",
    # Email providers (EMAIL_PROVIDER) and their tracking webhooks (/webhooks/email/).
    "anymail",
    "template_partials",
    # For its static Swagger UI: /api/v1/docs then loads nothing from a CDN, which the
    # content security policy would block.
    "ninja",
    "axes",
    "csp",
    "auditlog",
    "journeys",
    "conversions",
    "reporting",
    "webhooks",
]

MIDDLEWARE = [
    # Outermost, so every error of /api/ leaves in the contract's JSON shape.
    "config.security.ApiErrorShapeMiddleware",
    "django.middleware.security.SecurityMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    # Every view needs a logged-in user unless marked login_not_required (config/urls.py).
    "django.contrib.auth.middleware.LoginRequiredMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "django_htmx.middleware.HtmxMiddleware",
    "csp.middleware.CSPMiddleware",
    "auditlog.middleware.AuditlogMiddleware",
    # After sessions and auth, before axes: it times the view and names it by its route.
    "config.metrics.RequestLatencyMiddleware",
    # Last, as django-axes asks: it turns a locked-out login into the lockout page.
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

# SQLite is the zero-set-up default. Several processes (web, worker, beat) write to it at
# once, which only works with WAL, IMMEDIATE transactions and a generous busy timeout.
SQLITE_OPTIONS = {
    "transaction_mode": "IMMEDIATE",
    "timeout": 30,
    "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL; PRAGMA busy_timeout=30000;",
}
DATABASES = {"default": env.db("DATABASE_URL", default=f"sqlite:///{VAR_DIR / 'waypoint.sqlite3'}")}
if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
    DATABASES["default"].setdefault("OPTIONS", {}).update(SQLITE_OPTIONS)
else:
    DATABASES["default"].setdefault("CONN_MAX_AGE", env.int("CONN_MAX_AGE", default=60))
    DATABASES["default"].setdefault("CONN_HEALTH_CHECKS", True)
    if DATABASES["default"]["ENGINE"] == "django.db.backends.postgresql":
        # The app's queries are short; PostgreSQL's JIT compiles them for ~100 ms more than
        # they take to run (measured on the report benchmark).
        DATABASES["default"].setdefault("OPTIONS", {}).setdefault("options", "-c jit=off")
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
]
# django-axes checks every login attempt before the usual backend; force_login in tests
# bypasses both.
AUTHENTICATION_BACKENDS = [
    "axes.backends.AxesStandaloneBackend",
    "django.contrib.auth.backends.ModelBackend",
]
LOGIN_URL = "login"
LOGIN_REDIRECT_URL = "/journeys/"
LOGOUT_REDIRECT_URL = "login"

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

STATIC_URL = "static/"
STATICFILES_DIRS = [BASE_DIR / "static"]
STATIC_ROOT = env.path("STATIC_ROOT", default=VAR_DIR / "static")
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {
        "BACKEND": env.str(
            "STATICFILES_STORAGE",
            default="whitenoise.storage.CompressedManifestStaticFilesStorage"
            if not DEBUG
            else "django.contrib.staticfiles.storage.StaticFilesStorage",
        )
    },
}

# Email: EMAIL_URL (smtp://user:pass@host:587/?tls=True) or the console in development.
if "EMAIL_URL" in os.environ:
    vars().update(env.email_url("EMAIL_URL"))
else:
    EMAIL_BACKEND = env.str(
        "EMAIL_BACKEND", default="django.core.mail.backends.console.EmailBackend"
    )
# An email provider's API instead of SMTP: EMAIL_PROVIDER names one of anymail's backends,
# and every ANYMAIL_<NAME> variable becomes ANYMAIL["<NAME>"] (its keys, its webhook
# secrets): ANYMAIL_POSTMARK_SERVER_TOKEN, ANYMAIL_MAILGUN_API_KEY,
# ANYMAIL_MAILGUN_WEBHOOK_SIGNING_KEY, ANYMAIL_WEBHOOK_SECRET="user:pass"... (docs/messages.md).
EMAIL_PROVIDERS = (
    "amazon_ses", "brevo", "mailersend", "mailgun", "mailjet", "mailtrap", "mandrill",
    "postal", "postmark", "resend", "scaleway", "sendgrid", "sparkpost", "unisender_go",
)  # fmt: skip
EMAIL_PROVIDER = env.str("EMAIL_PROVIDER", default="").strip().lower()
if EMAIL_PROVIDER:
    if EMAIL_PROVIDER not in EMAIL_PROVIDERS:
        raise ImproperlyConfigured(
            f"EMAIL_PROVIDER={EMAIL_PROVIDER!r} is not a provider Waypoint sends through: "
            f"use one of {', '.join(EMAIL_PROVIDERS)}, or unset it to send by SMTP (EMAIL_URL)."
        )
    EMAIL_BACKEND = f"anymail.backends.{EMAIL_PROVIDER}.EmailBackend"


def _anymail_value(text: str):
    # anymail wants real booleans (IGNORE_UNSUPPORTED_FEATURES...) and a list of secrets
    # while one is being rotated ("old:pass,new:pass").
    if text.lower() in ("true", "false"):
        return text.lower() == "true"
    return [part.strip() for part in text.split(",")] if "," in text else text


ANYMAIL = {
    name.removeprefix("ANYMAIL_"): _anymail_value(value)
    for name, value in os.environ.items()
    if name.startswith("ANYMAIL_") and value
}
# Our own click tracking (journeys/clicks.py): links in HTML emails become signed redirects.
CLICK_TRACKING = env.bool("CLICK_TRACKING", default=False)
# Where links in messages (unsubscribe, click redirects) point, contract 6.1: the public
# address of this installation, no trailing slash.
PUBLIC_BASE_URL = env.str("PUBLIC_BASE_URL", default="http://127.0.0.1:8000")
DEFAULT_FROM_EMAIL = env.str("DEFAULT_FROM_EMAIL", default="Waypoint <journeys@localhost>")
# Dotted path of the SMS backend class; the console one prints, a provider's sends.
SMS_BACKEND = env.str("SMS_BACKEND", default="journeys.sms.ConsoleSMSBackend")
# The zone of contacts whose own `timezone` is blank: quiet hours are read in it.
DEFAULT_TIMEZONE = env.str("DEFAULT_TIMEZONE", default="UTC").strip()
try:
    check_timezone(DEFAULT_TIMEZONE)
except ValueError as exc:
    raise ImproperlyConfigured(f"DEFAULT_TIMEZONE: {exc}.") from None
# At most N marketing messages per contact and channel in a trailing ISO duration, over all
# journeys ("3/P1D"); empty: no cap. The rest are skipped with reason frequency_cap.
MESSAGE_FREQUENCY_CAP = env.str("MESSAGE_FREQUENCY_CAP", default="").strip()
try:
    parse_frequency_cap(MESSAGE_FREQUENCY_CAP)
except ValueError as exc:
    raise ImproperlyConfigured(f"MESSAGE_FREQUENCY_CAP: {exc}.") from None

# Celery. Messages only say "there is work": the database is the queue of record and the
# periodic sweep finds whatever a lost message would have announced.
CELERY_BROKER_URL = env.str("CELERY_BROKER_URL", default="filesystem://")
BROKER_DIR = VAR_DIR / "broker"
if CELERY_BROKER_URL.startswith("filesystem://"):
    # kombu's filesystem transport, writing each message whole (config/broker.py says why);
    # its channel makes these folders when it opens.
    CELERY_BROKER_TRANSPORT = "config.broker:Transport"
    CELERY_BROKER_TRANSPORT_OPTIONS = {
        "data_folder_in": str(BROKER_DIR / "out"),
        "data_folder_out": str(BROKER_DIR / "out"),
        "processed_folder": str(BROKER_DIR / "processed"),
        "control_folder": str(BROKER_DIR / "control"),
        "store_processed": False,
        "polling_interval": 0.1,
    }
CELERY_TASK_ALWAYS_EAGER = env.bool("CELERY_TASK_ALWAYS_EAGER", default=False)
CELERY_TASK_IGNORE_RESULT = True
CELERY_TASK_ACKS_LATE = True
CELERY_TASK_REJECT_ON_WORKER_LOST = True
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
# Event matching first: `journeys.process_events` is sent with priority 0, everything else
# with 5. On Redis a lower number is taken first (kombu keeps a list per priority step and
# pops them in order); the embedded broker ignores priorities. Without it, a worker took the
# wake-ups in the order they came, and pending events piled up behind runs of steps and
# sends (bench/README.md, issue 17). Routes, not task_default_priority, which would override
# them. An exact name is matched before a pattern.
CELERY_TASK_ROUTES = {"journeys.process_events": {"priority": 0}, "*": {"priority": 5}}
CELERY_BROKER_CONNECTION_RETRY_ON_STARTUP = True
CELERY_BEAT_SCHEDULE_FILENAME = str(VAR_DIR / "celerybeat-schedule")
SWEEP_INTERVAL_SECONDS = env.float("SWEEP_INTERVAL_SECONDS", default=5.0)
CELERY_BEAT_SCHEDULE = {
    # The sweep finds due work in the database and wakes workers for it, so that waits,
    # retries and lost messages need nothing but this one periodic task.
    "journeys-sweep": {"task": "journeys.sweep", "schedule": SWEEP_INTERVAL_SECONDS},
    # Reports stay exact without it (they add the facts not yet rolled up), but the tail they
    # add up grows, and with it the time a report takes.
    "reporting-rollups": {
        "task": "reporting.refresh_rollups",
        "schedule": env.float("ROLLUP_INTERVAL_SECONDS", default=30.0),
    },
}

# Engine tuning.
ENGINE_BATCH_SIZE = env.int("ENGINE_BATCH_SIZE", default=500)
ENGINE_LEASE_SECONDS = env.int("ENGINE_LEASE_SECONDS", default=300)
ENGINE_MAX_ATTEMPTS = env.int("ENGINE_MAX_ATTEMPTS", default=5)
# A task hands over once a batch ends past this many seconds (or after 20 batches), so that
# one kind of work (a long run of sends) never holds a worker while events wait.
ENGINE_TASK_SECONDS = env.float("ENGINE_TASK_SECONDS", default=2.0)
EVENT_CHAIN_MAX_DEPTH = 8
# Off only where the engine runs in the same process anyway (seed_demo).
ENGINE_WAKEUPS = env.bool("ENGINE_WAKEUPS", default=True)

# Webhooks out (webhooks/, docs/integrations.md). Private, loopback and link-local
# addresses (and plain http) are refused unless this is true: development and tests only.
WEBHOOK_ALLOW_PRIVATE = env.bool("WEBHOOK_ALLOW_PRIVATE", default=False)
WEBHOOK_TIMEOUT_SECONDS = env.float("WEBHOOK_TIMEOUT_SECONDS", default=5.0)
# Deliveries per batch: with the timeout, well inside ENGINE_LEASE_SECONDS.
WEBHOOK_BATCH_SIZE = env.int("WEBHOOK_BATCH_SIZE", default=20)
# How long a process trusts its cached set of subscribed event types.
WEBHOOK_SUBSCRIPTIONS_TTL_SECONDS = env.float("WEBHOOK_SUBSCRIPTIONS_TTL_SECONDS", default=10.0)

# Prometheus metrics at /metrics, for a scraper sending "Authorization: Bearer <token>";
# without a token set the endpoint answers 404.
METRICS_TOKEN = env.str("METRICS_TOKEN", default="")

# API limits.
DATA_UPLOAD_MAX_MEMORY_SIZE = env.int("DATA_UPLOAD_MAX_MEMORY_SIZE", default=512 * 1024)
API_MAX_EVENTS_PER_BATCH = 1000
# Longer URLs under /api/ get the API's JSON 414. gunicorn itself accepts request lines up to
# 8190 bytes (gunicorn.conf.py); beyond that it, or the proxy first, answers a plain 414.
API_MAX_URL_LENGTH = env.int("API_MAX_URL_LENGTH", default=4096)
# Deeper JSON bodies are refused with 400 before anything reads them (docs/security.md).
API_MAX_JSON_DEPTH = env.int("API_MAX_JSON_DEPTH", default=32)
# Events per API key per window ("N/<seconds>s"), counted in events, not requests; a batch
# over the budget gets 429 with Retry-After (journeys/ratelimit.py).
INGEST_RATE_LIMIT = env.str("INGEST_RATE_LIMIT", default="100000/60s")
# Contact reads and erasures per API key per window, counted in calls (docs/security.md says
# why these numbers): a CRM looking contacts up stays far below them, a leaked key paging
# through everyone's data or erasing it does not.
CONTACTS_READ_RATE_LIMIT = env.str("CONTACTS_READ_RATE_LIMIT", default="1200/60s")
CONTACTS_ERASE_RATE_LIMIT = env.str("CONTACTS_ERASE_RATE_LIMIT", default="120/60s")

# CSV imports of contacts (journeys/actions/imports.py): uploads wait here for the worker, so
# web and worker processes must share this folder; larger files are refused whole.
CONTACT_IMPORT_DIR = env.path("CONTACT_IMPORT_DIR", default=VAR_DIR / "imports")
CONTACT_IMPORT_MAX_BYTES = env.int("CONTACT_IMPORT_MAX_BYTES", default=256 * 1024 * 1024)

# The cache holds the rate-limit counters, so it must be shared by every process: Redis when
# CACHE_URL or REDIS_URL is set (several machines), else files under var/ (one machine).
if "CACHE_URL" in os.environ or "REDIS_URL" in os.environ:
    CACHES = {"default": env.cache_url_config(os.environ.get("CACHE_URL") or env("REDIS_URL"))}
else:
    CACHES = {
        "default": {
            "BACKEND": "django.core.cache.backends.filebased.FileBasedCache",
            "LOCATION": str(VAR_DIR / "cache"),
        }
    }

# Login throttling (django-axes): after LOGIN_FAILURE_LIMIT failures for one username from
# one address, that pair is locked out for LOGIN_LOCKOUT_MINUTES; the login page says so.
AXES_FAILURE_LIMIT = env.int("LOGIN_FAILURE_LIMIT", default=5)
AXES_COOLOFF_TIME = timedelta(minutes=env.float("LOGIN_LOCKOUT_MINUTES", default=15))
AXES_LOCKOUT_PARAMETERS = [["username", "ip_address"]]
AXES_RESET_ON_SUCCESS = True
AXES_LOCKOUT_CALLABLE = "config.security.lockout_response"
# How many proxies (TLS terminator, load balancer) stand in front of gunicorn and append the
# address they saw to X-Forwarded-For. 0: gunicorn is reached directly and the header, which
# any client can write, is ignored. Behind a proxy, 0 makes every login come from the proxy's
# address, and five bad passwords lock that username out for everyone (docs/operations.md).
TRUSTED_PROXY_COUNT = env.str("TRUSTED_PROXY_COUNT", default="0").strip()
if not TRUSTED_PROXY_COUNT.isdigit():
    raise ImproperlyConfigured(
        "TRUSTED_PROXY_COUNT must be a whole number, 0 or more (the number of proxies in "
        f"front of gunicorn), not {TRUSTED_PROXY_COUNT!r}."
    )
TRUSTED_PROXY_COUNT = int(TRUSTED_PROXY_COUNT)
AXES_CLIENT_IP_CALLABLE = "config.security.client_ip"

# Content security policy (django-csp): everything from this origin, no inline script or
# <style> at all (the report page alone relaxes style-src for its SVG charts:
# reporting.views.allow_inline_styles); style attributes stay allowed because pygal's SVG
# uses one.
CONTENT_SECURITY_POLICY = {
    "DIRECTIVES": {
        "default-src": [SELF],
        "script-src": [SELF],
        "style-src": [SELF],
        "style-src-attr": ["'unsafe-inline'"],
        "img-src": [SELF, "data:"],
        "font-src": [SELF],
        "connect-src": [SELF],
        "object-src": [NONE],
        "base-uri": [SELF],
        "form-action": [SELF],
        "frame-ancestors": [NONE],
    }
}

# Audit log (django-auditlog): who changed what and when, for the models that decide what
# the product does. Reads go through journeys.audit.
AUDITLOG_INCLUDE_TRACKING_MODELS = (
    "journeys.journey",
    "journeys.journeyversion",
    "conversions.goal",
    "conversions.conversion",
    {"model": "journeys.apikey", "exclude_fields": ["last_used_at", "key_hash"]},
    {
        "model": "auth.user",
        "include_fields": ["username", "is_active", "is_staff", "is_superuser", "groups"],
        "m2m_fields": ["groups"],
    },
    {"model": "auth.group", "m2m_fields": ["permissions"]},
)

# Production hardening, switched on from the environment behind a TLS-terminating proxy.
SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
SECURE_SSL_REDIRECT = env.bool("SECURE_SSL_REDIRECT", default=False)
SESSION_COOKIE_SECURE = env.bool("SESSION_COOKIE_SECURE", default=False)
CSRF_COOKIE_SECURE = env.bool("CSRF_COOKIE_SECURE", default=False)
SECURE_HSTS_SECONDS = env.int("SECURE_HSTS_SECONDS", default=0)
SECURE_HSTS_INCLUDE_SUBDOMAINS = env.bool("SECURE_HSTS_INCLUDE_SUBDOMAINS", default=False)
SECURE_HSTS_PRELOAD = env.bool("SECURE_HSTS_PRELOAD", default=False)
# Load balancers probe /healthz over plain HTTP inside the network.
SECURE_REDIRECT_EXEMPT = [r"^healthz$", r"^metrics$"]
# /healthz answers 503 once any due work (pending event, due enrollment, pending message) has
# waited longer than this: the workers are down or cannot keep up.
HEALTH_MAX_DUE_SECONDS = env.float("HEALTH_MAX_DUE_SECONDS", default=300.0)

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"plain": {"format": "%(asctime)s %(levelname)s %(name)s %(message)s"}},
    # Email addresses never reach a log line in clear (config/security.py).
    "filters": {"mask_emails": {"()": "config.security.MaskEmailsFilter"}},
    "handlers": {
        "console": {
            "class": "logging.StreamHandler",
            "formatter": "plain",
            "filters": ["mask_emails"],
        }
    },
    "root": {"handlers": ["console"], "level": env.str("LOG_LEVEL", default="INFO")},
    "loggers": {
        "django.db.backends": {"level": "WARNING"},
        # Its start-up banner on every command is noise; lockouts are warnings and still show.
        "axes": {"level": "WARNING"},
    },
}
