"""Strongroom settings, read from the environment (twelve-factor).

With nothing set, Strongroom runs on one machine: SQLite metadata in
STRONGROOM_DATA_DIR, the django-q2 ORM broker, local storage, and a master key
generated into the key directory on first start.
"""

import getpass
from pathlib import Path

from croniter import croniter
from django.core.exceptions import ImproperlyConfigured

from backupsite.envconfig import (
    database_from_url,
    env,
    env_bool,
    env_int,
    env_list,
    secret_key,
    server_binary,
    sqlite_database,
)

BASE_DIR = Path(__file__).resolve().parent.parent
DATA_DIR = Path(env("STRONGROOM_DATA_DIR", str(BASE_DIR / "data"))).resolve()
KEY_DIR = Path(env("STRONGROOM_KEY_DIR", str(DATA_DIR / "keys"))).resolve()

SECRET_KEY = secret_key(DATA_DIR)
DEBUG = env_bool("DEBUG", False)
ALLOWED_HOSTS = env_list("ALLOWED_HOSTS", ["127.0.0.1", "localhost"])
CSRF_TRUSTED_ORIGINS = env_list("CSRF_TRUSTED_ORIGINS", [])
SITE_NAME = env("SITE_NAME", "Strongroom")

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "django.contrib.humanize",
    "django_htmx",
    "django_q",
    "catalog",
    "restore",
    "drills",
    "compliance",
    "pitr",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "django_htmx.middleware.HtmxMiddleware",
    "catalog.middleware.LoginRequiredEverywhere",
    "catalog.middleware.ReadOnlyForViewers",
    "catalog.middleware.AuditRequestIP",
]

ROOT_URLCONF = "backupsite.urls"

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
                "catalog.context_processors.branding",
            ],
        },
    },
]

WSGI_APPLICATION = "backupsite.wsgi.application"

DATABASE_URL = env("DATABASE_URL")
if DATABASE_URL:
    DATABASES = {"default": database_from_url(DATABASE_URL, "DATABASE_URL")}
else:
    DATABASES = {"default": sqlite_database(DATA_DIR / "strongroom.sqlite3")}

DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
]

LOGIN_URL = "login"
LOGIN_REDIRECT_URL = "dashboard"
LOGOUT_REDIRECT_URL = "login"

LANGUAGE_CODE = "en-us"
TIME_ZONE = env("TIME_ZONE", "UTC")
USE_I18N = True
USE_TZ = True

STATIC_URL = "static/"
STATICFILES_DIRS = [BASE_DIR / "static"]
# Served by the app itself (WhiteNoise) straight from the app folders, so the
# quick start needs no collectstatic; set STATIC_ROOT to collect for production.
STATIC_ROOT = env("STATIC_ROOT") or None
WHITENOISE_USE_FINDERS = True

SESSION_COOKIE_HTTPONLY = True
SESSION_COOKIE_SECURE = env_bool("SECURE_COOKIES", False)
CSRF_COOKIE_SECURE = SESSION_COOKIE_SECURE

# Backups can run for hours. django-q2 re-delivers a task after `retry`
# seconds, so it must be longer than `timeout`; a failed task is recorded and
# never re-run by itself (max_attempts 1), and missed schedule slots are not
# replayed in a burst (catch_up False).
BACKUP_TIMEOUT = env_int("BACKUP_TIMEOUT_SECONDS", 6 * 3600, minimum=60)
Q_CLUSTER = {
    "name": "strongroom",
    "workers": env_int("Q_WORKERS", 2, minimum=1),
    "timeout": BACKUP_TIMEOUT,
    "retry": BACKUP_TIMEOUT + 600,
    "max_attempts": 1,
    "ack_failures": True,
    "catch_up": False,
    "save_limit": 1000,
    "label": "Task queue",
    "poll": 1,
}
# The tick and alert sending run in a second cluster with its own worker
# (catalog/queues.py): `Q_CLUSTER_NAME=strongroom-monitor manage.py qcluster`.
WORK_CLUSTER = Q_CLUSTER["name"]
MONITOR_CLUSTER = "strongroom-monitor"
Q_CLUSTER["ALT_CLUSTERS"] = {MONITOR_CLUSTER: {"workers": 1, "timeout": 600, "retry": 900}}
REDIS_URL = env("REDIS_URL")
if REDIS_URL:
    Q_CLUSTER["redis"] = REDIS_URL
else:
    Q_CLUSTER["orm"] = "default"

# A running backup touches its heartbeat every few seconds; one silent for
# longer than this is taken as dead (its worker crashed or was killed).
HEARTBEAT_INTERVAL = env_int("HEARTBEAT_INTERVAL_SECONDS", 10, minimum=1)
HEARTBEAT_TIMEOUT = env_int("HEARTBEAT_TIMEOUT_SECONDS", 120, minimum=5)
# When every plan's retention rule is applied (besides after each good backup).
PRUNE_SCHEDULE = env("PRUNE_SCHEDULE", "15 4 * * *")
if not croniter.is_valid(PRUNE_SCHEDULE):
    raise ImproperlyConfigured(f"PRUNE_SCHEDULE is not a cron expression: {PRUNE_SCHEDULE!r}")

PG_DUMP = env("PG_DUMP", "pg_dump")
PG_RESTORE = env("PG_RESTORE", "pg_restore")
PSQL = env("PSQL", "psql")
# Continuous WAL protection: pg_receivewal writes each streamed source's WAL
# into a spool directory until it is shipped to the destinations.
PG_RECEIVEWAL = env("PG_RECEIVEWAL", "pg_receivewal")
WAL_SPOOL_DIR = Path(env("WAL_SPOOL_DIR", str(DATA_DIR / "wal-spool"))).resolve()
# The WAL_RECEIVER alert opens when a receiver has not been seen running for this long.
WAL_RECEIVER_STALE_SECONDS = env_int("WAL_RECEIVER_STALE_SECONDS", 120, minimum=10)
# The WAL_LATE alert: no WAL stored for this long while the source has unshipped writes.
WAL_LATE_MINUTES = env_int("WAL_LATE_MINUTES", 30, minimum=1)
# Physical base backups for point-in-time recovery (the pitr app).
PG_BASEBACKUP = env("PG_BASEBACKUP", "pg_basebackup")
# Point-in-time restores start the restored cluster with pg_ctl (a server
# binary: Debian keeps it in /usr/lib/postgresql/<version>/bin), into a new
# data directory under PITR_RESTORE_ROOT, owned by and run as PITR_OS_USER.
PG_CTL = env("PG_CTL", "") or server_binary("pg_ctl")
PITR_RESTORE_ROOT = Path(env("PITR_RESTORE_ROOT", str(DATA_DIR / "pitr-restores"))).resolve()
PITR_OS_USER = env("PITR_OS_USER", "") or getpass.getuser()
if PITR_OS_USER == "root":
    # PostgreSQL refuses to run as root; a root worker restores as postgres unless told otherwise.
    PITR_OS_USER = "postgres"
# How long a point-in-time restore may take to replay its WAL and promote.
PITR_RECOVERY_TIMEOUT = env_int("PITR_RECOVERY_TIMEOUT", 6 * 3600, minimum=60)
# Restores of custom-format dumps run `pg_restore -j` from a temporary file here.
RESTORE_TMP_DIR = Path(env("RESTORE_TMP_DIR", str(DATA_DIR / "tmp"))).resolve()
RESTORE_JOBS = env_int("RESTORE_JOBS", 4, minimum=1)
# Where restore tests create their scratch databases: a libpq URL of a server
# (with a user that may create databases). Empty: the source's own server.
VERIFY_SERVER_URL = env("VERIFY_SERVER_URL", "")
# Another server restores into new databases may go to (libpq URL); empty: none offered.
RESTORE_SERVER_URL = env("RESTORE_SERVER_URL", "")

# Monitoring. The base URL makes links in alerts absolute.
SITE_URL = env("SITE_URL", "http://127.0.0.1:8000").rstrip("/")
# Outgoing mail for email channels (SMTP).
EMAIL_HOST = env("EMAIL_HOST", "localhost")
EMAIL_PORT = env_int("EMAIL_PORT", 25, minimum=1)
EMAIL_HOST_USER = env("EMAIL_HOST_USER", "")
EMAIL_HOST_PASSWORD = env("EMAIL_HOST_PASSWORD", "")
EMAIL_USE_TLS = env_bool("EMAIL_USE_TLS", False)
EMAIL_USE_SSL = env_bool("EMAIL_USE_SSL", False)
EMAIL_TIMEOUT = env_int("EMAIL_TIMEOUT_SECONDS", 10, minimum=1)
DEFAULT_FROM_EMAIL = env("DEFAULT_FROM_EMAIL", "strongroom@localhost")
# Share of a destination's quota, or of a local disk, above which an alert opens.
STORAGE_ALERT_SHARE = env_int("STORAGE_ALERT_PERCENT", 80, minimum=1) / 100
# A backup still queued this long means no worker is taking work.
STUCK_QUEUED_MINUTES = env_int("STUCK_QUEUED_MINUTES", 15, minimum=1)
# The active master key older than this many days raises a reminder to rotate it.
KEY_ROTATION_DAYS = env_int("KEY_ROTATION_DAYS", 365, minimum=1)
# /metrics answers a token with the read scope, or these client addresses.
METRICS_ALLOWED_IPS = env_list("METRICS_ALLOWED_IPS", [])
# Alert channels: each HTTP request waits this long for an answer; after a
# connection error, a timeout, 429 or 5xx a channel is tried again after each
# of these pauses (seconds), so four attempts in all.
NOTIFY_HTTP_TIMEOUT = env_int("NOTIFY_HTTP_TIMEOUT_SECONDS", 10, minimum=1)
NOTIFY_RETRY_DELAYS = (1, 4, 15)
PAGERDUTY_EVENTS_URL = env("PAGERDUTY_EVENTS_URL", "https://events.pagerduty.com/v2/enqueue")

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"plain": {"format": "%(asctime)s %(levelname)s %(name)s: %(message)s"}},
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": "plain"}},
    "root": {"handlers": ["console"], "level": env("LOG_LEVEL", "INFO")},
}
