"""Strongroom settings, read from the environment (twelve-factor).

With nothing set, Strongroom runs on one machine: SQLite metadata in
STRONGROOM_DATA_DIR, the django-q2 ORM broker, local storage, and a master key
generated into the key directory on first start.
"""

import getpass
import os
import socket
from datetime import timedelta
from pathlib import Path

from croniter import croniter
from django.core.exceptions import ImproperlyConfigured

from backupsite.envconfig import (
    PASSWORD_SIGN_IN_CHOICES,
    create_private_database_file,
    database_from_url,
    env,
    env_bool,
    env_choice,
    env_int,
    env_list,
    host_name,
    key_encryption_key,
    oidc_issuer,
    refuse_bad_sign_in_settings,
    secret_key,
    server_binary,
    sqlite_database,
)
from catalog.engine.files import PRIVATE_UMASK

# Everything Strongroom writes is the service user's alone (files 0600,
# folders 0700): the metadata database, spools, scratch files, exports, keys,
# logs. Set here because the settings are the first code every entry point runs
# (manage.py and its commands, the workers, wsgi, asgi); what must stay private
# however the process was started also sets its mode itself (catalog/engine/files.py).
os.umask(PRIVATE_UMASK)

BASE_DIR = Path(__file__).resolve().parent.parent
DATA_DIR = Path(env("STRONGROOM_DATA_DIR", str(BASE_DIR / "data"))).resolve()
KEY_DIR = Path(env("STRONGROOM_KEY_DIR", str(DATA_DIR / "keys"))).resolve()
# Master keys every host can use (catalog/keyring.py, docs/DEPLOYMENT.md): with
# a key-encryption key (STRONGROOM_KEK or STRONGROOM_KEK_FILE, the same on every
# host) or an AWS KMS key, or both, keys are sealed in the metadata database;
# with neither, they are files in KEY_DIR, on one host. The previous KEK opens
# keys while `manage.py seal_keys` re-seals them under a new one. Named *_KEY,
# so that Django's error reports leave them out.
KEY_ENCRYPTION_KEY = key_encryption_key("STRONGROOM_KEK")
KEY_ENCRYPTION_KEY_PREVIOUS = key_encryption_key("STRONGROOM_KEK_PREVIOUS")
KMS_KEY_ID = (env("STRONGROOM_KMS_KEY_ID") or "").strip()

SECRET_KEY = secret_key(DATA_DIR)
# Generated on this host into the data directory: every host of a shared
# metadata database needs the same one (catalog.checks warns).
SECRET_KEY_GENERATED = not env("SECRET_KEY")
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
    "csp",
    "axes",
    # Two-factor sign-in (accounts/two_factor.py): authenticator-app codes and recovery codes.
    "django_otp",
    "django_otp.plugins.otp_totp",
    "django_otp.plugins.otp_static",
    "catalog",
    "restore",
    "drills",
    "compliance",
    "pitr",
    "accounts",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "csp.middleware.CSPMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "django_htmx.middleware.HtmxMiddleware",
    "catalog.middleware.LoginRequiredEverywhere",
    # An administrator who must set up two-factor sees the set-up page only (accounts/middleware.py).
    "accounts.middleware.TwoFactorEnrolmentRequired",
    "catalog.middleware.ReadOnlyForViewers",
    "catalog.middleware.AuditRequestIP",
    # Last, as django-axes asks: it turns a lockout into the 429 page.
    "axes.middleware.AxesMiddleware",
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
if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
    create_private_database_file(DATABASES["default"]["NAME"])

DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
]

LOGIN_URL = "login"
LOGIN_REDIRECT_URL = "dashboard"
LOGOUT_REDIRECT_URL = "login"

# --- Single sign-on (OpenID Connect: accounts/oidc.py, docs/DEPLOYMENT.md) ----
# On when the identity provider's issuer URL is set. Its endpoints come from its
# discovery document at the first sign-in, never at start-up: a provider that is
# down must not stop Strongroom, nor its break-glass users.
OIDC_ISSUER = oidc_issuer("STRONGROOM_OIDC_ISSUER")
OIDC_RP_CLIENT_ID = (env("STRONGROOM_OIDC_CLIENT_ID") or "").strip()
# Named *_SECRET, so that Django's error reports leave it out.
OIDC_RP_CLIENT_SECRET = (env("STRONGROOM_OIDC_CLIENT_SECRET") or "").strip()
OIDC_PROVIDER_NAME = (env("STRONGROOM_OIDC_PROVIDER_NAME") or "").strip() or "your organisation's sign-in"
OIDC_RP_SCOPES = (env("STRONGROOM_OIDC_SCOPES") or "").strip() or "openid email profile"
# Roles from the provider's groups at every sign-in, when either list is set:
# administrator wins over auditor, neither is no role.
OIDC_GROUPS_CLAIM = (env("STRONGROOM_OIDC_GROUPS_CLAIM") or "").strip() or "groups"
OIDC_ADMINISTRATOR_GROUPS = env_list("STRONGROOM_OIDC_ADMINISTRATOR_GROUPS", [])
OIDC_AUDITOR_GROUPS = env_list("STRONGROOM_OIDC_AUDITOR_GROUPS", [])
# Someone the provider vouches for but Strongroom does not know: made a person
# (just in time), or, when linking is on, matched to a local user of the same
# name that has no identity yet (never a break-glass one); else refused.
OIDC_CREATE_USERS = env_bool("STRONGROOM_OIDC_CREATE_USERS", False)
OIDC_LINK_EXISTING_USERS = env_bool("STRONGROOM_OIDC_LINK_EXISTING_USERS", False)
# "everyone", or "break-glass-only": then only BREAK_GLASS_USERS sign in with a password.
PASSWORD_SIGN_IN = env_choice("STRONGROOM_PASSWORD_SIGN_IN", PASSWORD_SIGN_IN_CHOICES, "everyone")
BREAK_GLASS_USERS = env_list("STRONGROOM_BREAK_GLASS_USERS", [])
refuse_bad_sign_in_settings(OIDC_ISSUER, OIDC_RP_CLIENT_ID, OIDC_RP_CLIENT_SECRET, PASSWORD_SIGN_IN, BREAK_GLASS_USERS)
# mozilla-django-oidc: ID tokens signed RS256 with the provider's published
# keys; state, nonce and PKCE checked; the client secret sent as HTTP basic
# (client_secret_basic, what OpenID Connect assumes); no token kept in the session.
OIDC_RP_SIGN_ALGO = "RS256"
OIDC_USE_NONCE = True
OIDC_USE_PKCE = True
OIDC_STORE_ACCESS_TOKEN = False
OIDC_STORE_ID_TOKEN = False
OIDC_TIMEOUT = env_int("STRONGROOM_OIDC_TIMEOUT_SECONDS", 10, minimum=1)

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

# --- Security ----------------------------------------------------------------
# A session ends SESSION_COOKIE_AGE after sign-in, however active it is: the
# pages poll with htmx every second, so a sliding expiry would never end an
# unattended session. SESSION_EXPIRE_AT_BROWSER_CLOSE ends it sooner too.
SESSION_COOKIE_AGE = env_int("SESSION_COOKIE_AGE", 12 * 3600, minimum=60)
SESSION_EXPIRE_AT_BROWSER_CLOSE = env_bool("SESSION_EXPIRE_AT_BROWSER_CLOSE", False)
SESSION_SAVE_EVERY_REQUEST = False

# Served over TLS (SECURE_COOKIES on): plain http is redirected and browsers
# are told to use https only for a year. Behind a proxy that terminates TLS,
# SECURE_PROXY_SSL_HEADER names the header it sets to "https" (such as
# X-Forwarded-Proto); only set it when the proxy always overwrites that header,
# or a client could claim https itself.
SECURE_SSL_REDIRECT = env_bool("SECURE_SSL_REDIRECT", SESSION_COOKIE_SECURE)
# Load balancers probe the health check over plain http.
SECURE_REDIRECT_EXEMPT = [r"^healthz$", r"^readyz$"]
SECURE_HSTS_SECONDS = env_int("SECURE_HSTS_SECONDS", 365 * 24 * 3600 if SESSION_COOKIE_SECURE else 0, minimum=0)
SECURE_HSTS_INCLUDE_SUBDOMAINS = env_bool("SECURE_HSTS_INCLUDE_SUBDOMAINS", True)
SECURE_HSTS_PRELOAD = env_bool("SECURE_HSTS_PRELOAD", False)
if env("SECURE_PROXY_SSL_HEADER", ""):
    SECURE_PROXY_SSL_HEADER = ("HTTP_" + env("SECURE_PROXY_SSL_HEADER", "").strip().upper().replace("-", "_"), "https")
X_FRAME_OPTIONS = "DENY"
SECURE_CONTENT_TYPE_NOSNIFF = True
SECURE_REFERRER_POLICY = "same-origin"
SECURE_CROSS_ORIGIN_OPENER_POLICY = "same-origin"
SILENCED_SYSTEM_CHECKS = [
    # "HSTS preload not set": preloading is decided for a whole registered
    # domain by its owners and submitted to the browser makers, not by one
    # application on one of its hosts. SECURE_HSTS_PRELOAD sets it when they have.
    "security.W021",
]

# No inline script anywhere (static/js/strongroom.js handles data-confirm and
# the like; htmx runs with allowEval off, see base.html), so an injected
# <script> or on*= attribute does not run. Style attributes stay allowed
# (style-src-attr): the templates size bars and grids with them, and they
# cannot run code or select elements; <style> elements are not.
CONTENT_SECURITY_POLICY = {
    "DIRECTIVES": {
        "default-src": ["'self'"],
        "script-src": ["'self'"],
        "style-src": ["'self'"],
        "style-src-attr": ["'unsafe-inline'"],
        "object-src": ["'none'"],
        "base-uri": ["'self'"],
        "frame-ancestors": ["'none'"],
        "form-action": ["'self'"],
    },
}

# Sign-in attempts (django-axes): after LOGIN_FAILURE_LIMIT wrong passwords
# for one user name from one address, that pair is refused (429) for
# LOGIN_COOLOFF_MINUTES; other users and addresses are not affected. The
# client address is REMOTE_ADDR, as for the audit trail (catalog/middleware.py).
AUTHENTICATION_BACKENDS = [
    "axes.backends.AxesStandaloneBackend",
    # Refuses a password sign-in of anyone but the break-glass users when PASSWORD_SIGN_IN says so.
    "accounts.oidc.PasswordSignInPolicy",
    "django.contrib.auth.backends.ModelBackend",
    # Keeps the sessions of single sign-on; never checks a password.
    "accounts.oidc.SingleSignOnBackend",
]
AXES_FAILURE_LIMIT = env_int("LOGIN_FAILURE_LIMIT", 5, minimum=1)
AXES_COOLOFF_TIME = timedelta(minutes=env_int("LOGIN_COOLOFF_MINUTES", 15, minimum=1))
AXES_LOCKOUT_PARAMETERS = [["username", "ip_address"]]
AXES_RESET_ON_SUCCESS = True
# Attempts refused during a lockout do not start the cool-off again: the page
# promises "try again in 15 minutes", and a user who tries early is not
# punished with another 15.
AXES_RESET_COOL_OFF_ON_FAILURE_DURING_LOCKOUT = False
AXES_LOCKOUT_TEMPLATE = "registration/locked_out.html"
# A wrong second-factor code or a refused security key counts as a failed sign-in
# too (accounts/two_factor.py); axes keeps each failed attempt's form data, with
# these fields masked (a key's answer holds the challenge it signed).
AXES_SENSITIVE_PARAMETERS = ["username", "ip_address", "code", "key_answer"]
# Lockouts are audited (catalog/lockouts.py); axes's banner on every start is noise.
AXES_VERBOSE = False

# Two-factor sign-in: authenticator apps show the site's name beside the user's,
# and the Django admin lists devices without their secrets.
OTP_TOTP_ISSUER = SITE_NAME
OTP_ADMIN_HIDE_SENSITIVE_DATA = True

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
# This host's name among the hosts sharing the metadata database, and its own
# queue: work that can only run here (a point-in-time restore into a data
# directory on this host) goes there. `Q_CLUSTER_NAME=strongroom-host manage.py
# qcluster` runs it; the name is made this host's queue below, before django-q2
# reads it, so that one unit file serves every host.
HOST_NAME = host_name(env("STRONGROOM_HOST", socket.gethostname()))
HOST_CLUSTER_PREFIX = "strongroom-host-"
HOST_CLUSTER = HOST_CLUSTER_PREFIX + HOST_NAME
if os.environ.get("Q_CLUSTER_NAME") == "strongroom-host":
    os.environ["Q_CLUSTER_NAME"] = HOST_CLUSTER
Q_CLUSTER["ALT_CLUSTERS"] = {
    MONITOR_CLUSTER: {"workers": 1, "timeout": 600, "retry": 900},
    HOST_CLUSTER: {"workers": env_int("HOST_WORKERS", 1, minimum=1)},
}
REDIS_URL = env("REDIS_URL")
# Each cluster's sentinel says it is alive in the metadata database through its
# broker (catalog/brokers.py), where /readyz and the host choices read it.
if REDIS_URL:
    Q_CLUSTER["redis"] = REDIS_URL
    Q_CLUSTER["broker_class"] = "catalog.brokers.RedisWithHeartbeat"
else:
    Q_CLUSTER["orm"] = "default"
    Q_CLUSTER["broker_class"] = "catalog.brokers.OrmWithHeartbeat"
# A cluster's sentinel records its heartbeat this often; /readyz wants one
# from the work cluster within WORKER_SILENCE_SECONDS.
WORKER_HEARTBEAT_SECONDS = env_int("WORKER_HEARTBEAT_SECONDS", 15, minimum=1)
WORKER_SILENCE_SECONDS = env_int("WORKER_SILENCE_SECONDS", 180, minimum=30)

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
PG_DUMPALL = env("PG_DUMPALL", "pg_dumpall")
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
# Local destinations must lie inside one of these directories (checked with
# `..` and symlinks resolved, on save and on every read and write), so a form
# cannot point a backup or a download at the keys or any other file of the server.
LOCAL_DESTINATION_ROOTS = [
    Path(root).resolve() for root in env_list("LOCAL_DESTINATION_ROOTS", [str(DATA_DIR / "backups")])
]
# Restores of custom-format dumps run `pg_restore -j` from a temporary file here,
# and of directory-format ones from the unpacked files (a directory per restore).
RESTORE_TMP_DIR = Path(env("RESTORE_TMP_DIR", str(DATA_DIR / "tmp"))).resolve()
# Dumps made elsewhere, imported as backups (catalog/imports.py): the largest
# file taken, uploaded, read from a destination or named on the command line.
# An upload streams into a private file under DATA_DIR/tmp as it arrives and
# stops at this size (catalog/uploads.py); none is ever held in memory, and
# other uploads (a key file) stay in memory only while this small.
IMPORT_MAX_BYTES = env_int("STRONGROOM_IMPORT_MAX_BYTES", 50 << 30, minimum=1)  # 50 GB, as the pages count them
FILE_UPLOAD_MAX_MEMORY_SIZE = 64 * 1024
# pg_restore's jobs. The default suits a PostgreSQL on this machine: more jobs
# than cores made restores slower (1.26x against 1.09x pg_restore -j 2 with 4
# jobs on 2 cores, bench/RESULTS.md); a bigger restore server deserves more.
# One job streams the dump into pg_restore, without the temporary file.
RESTORE_JOBS = env_int("RESTORE_JOBS", min(4, os.cpu_count() or 1), minimum=1)
# Where restore tests create their scratch databases: a libpq URL of a server
# (with a user that may create databases). Empty: the source's own server.
VERIFY_SERVER_URL = env("VERIFY_SERVER_URL", "")

# S3 destinations: each request waits this long to connect and for each read,
# and a throttled (SlowDown, 503), failed (500) or reset request is tried up to
# S3_MAX_ATTEMPTS times in all, with exponential backoff and jitter between
# attempts; uploads go in parts of S3_PART_SIZE_MB (S3 needs at least 5).
# The timeouts and attempts govern the other remote kinds too (Azure, Google
# Cloud Storage, SFTP: a broken read goes on from where it stopped).
S3_MAX_ATTEMPTS = env_int("S3_MAX_ATTEMPTS", 5, minimum=1)
S3_CONNECT_TIMEOUT = env_int("S3_CONNECT_TIMEOUT", 10, minimum=1)
S3_READ_TIMEOUT = env_int("S3_READ_TIMEOUT", 60, minimum=1)
S3_PART_SIZE_MB = env_int("S3_PART_SIZE_MB", 8, minimum=5)
# S3 endpoints and webhook URLs never reach link-local or cloud metadata
# addresses (169.254.169.254 …). Private and loopback ones (a MinIO on 10.x, a
# chat server on the LAN) are allowed unless this is off (catalog/endpoints.py).
ALLOW_PRIVATE_ENDPOINTS = env_bool("ALLOW_PRIVATE_ENDPOINTS", True)

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

# LOG_FORMAT=json: a JSON object a line, with the host, and the job and source
# a worker's line is about (catalog/logformat.py), for a log collector.
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {
        "plain": {"format": "%(asctime)s %(levelname)s %(name)s: %(message)s"},
        "json": {"()": "catalog.logformat.JsonFormatter"},
    },
    "handlers": {
        "console": {
            "class": "logging.StreamHandler",
            "formatter": "json" if env("LOG_FORMAT", "plain") == "json" else "plain",
        }
    },
    "root": {"handlers": ["console"], "level": env("LOG_LEVEL", "INFO")},
}
