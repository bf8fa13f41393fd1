"""Settings helpers that read the environment and refuse bad values.

Every secret may also come from a file named by the same variable with a
``_FILE`` suffix (Docker and systemd credentials), which wins over the plain
variable. A bad value stops start-up with a message naming the variable.
"""

import os
import re
import secrets
from pathlib import Path
from typing import Any, overload
from urllib.parse import parse_qsl, unquote, urlsplit

from django.core.exceptions import ImproperlyConfigured

from catalog.engine import keyseal
from catalog.engine.files import PRIVATE_FILE, make_private_dirs


@overload
def env(name: str, default: str) -> str: ...


@overload
def env(name: str, default: None = None) -> str | None: ...


def env(name: str, default: str | None = None) -> str | None:
    file_path = os.environ.get(f"{name}_FILE")
    if file_path:
        try:
            return Path(file_path).read_text().strip()
        except OSError as exc:
            raise ImproperlyConfigured(
                f"{name}_FILE points at {file_path}, which cannot be read: {exc.strerror}"
            ) from exc
    return os.environ.get(name, default)


def env_bool(name: str, default: bool) -> bool:
    value = env(name)
    if value is None or value == "":
        return default
    lowered = value.strip().lower()
    if lowered in ("1", "true", "yes", "on"):
        return True
    if lowered in ("0", "false", "no", "off"):
        return False
    raise ImproperlyConfigured(f"{name} must be true or false, not {value!r}")


def env_int(name: str, default: int, minimum: int | None = None) -> int:
    value = env(name)
    if value is None or value == "":
        return default
    try:
        number = int(value)
    except ValueError as exc:
        raise ImproperlyConfigured(f"{name} must be a whole number, not {value!r}") from exc
    if minimum is not None and number < minimum:
        raise ImproperlyConfigured(f"{name} must be at least {minimum}, not {number}")
    return number


def env_list(name: str, default: list[str]) -> list[str]:
    value = env(name)
    if value is None:
        return default
    return [item.strip() for item in value.split(",") if item.strip()]


# A host's name becomes part of its queue's name and is shown in pages: a
# plain DNS-like label, never a path or a space.
HOST_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9.-]{0,62}\Z")


def host_name(name: str) -> str:
    if not HOST_NAME.match(name):
        raise ImproperlyConfigured(
            f"STRONGROOM_HOST must be a host name of letters, digits, dots and dashes (63 at most): {name[:80]!r}"
        )
    return name


def database_from_url(url: str, name: str) -> dict[str, Any]:
    """Turns DATABASE_URL into a Django DATABASES entry (postgres or sqlite)."""
    parts = urlsplit(url)
    if parts.scheme in ("postgres", "postgresql"):
        options = dict(parse_qsl(parts.query))
        return {
            "ENGINE": "django.db.backends.postgresql",
            "NAME": unquote(parts.path.lstrip("/")),
            "USER": unquote(parts.username or ""),
            "PASSWORD": unquote(parts.password or ""),
            "HOST": parts.hostname or "",
            "PORT": str(parts.port or ""),
            "OPTIONS": options,
            "CONN_MAX_AGE": 60,
            "CONN_HEALTH_CHECKS": True,
        }
    if parts.scheme == "sqlite":
        # sqlite:///relative/path or sqlite:////absolute/path, as elsewhere
        return sqlite_database(Path(unquote(url[len("sqlite:///") :])))
    raise ImproperlyConfigured(f"{name} must start with postgresql:// or sqlite://, not {parts.scheme or 'nothing'}://")


def sqlite_database(path: str | os.PathLike[str]) -> dict[str, Any]:
    return {
        "ENGINE": "django.db.backends.sqlite3",
        "NAME": str(path),
        "OPTIONS": {
            # WAL lets the web server read while a worker writes progress;
            # IMMEDIATE avoids "database is locked" on read-then-write upgrades.
            "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;",
            "transaction_mode": "IMMEDIATE",
            "timeout": 30,
        },
    }


def create_private_database_file(path: str | os.PathLike[str]) -> None:
    """Creates the SQLite metadata database as an empty file of mode 0600
    (in a 0700 folder) before SQLite first opens it: SQLite gives its -wal
    and -shm files the database file's mode, and the database holds session
    keys and every setting. An existing file is left as it is (the start-up
    check warns when others can read it)."""
    path = Path(path)
    if path.exists():
        return
    try:
        make_private_dirs(path.parent)
        os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, PRIVATE_FILE))
    except FileExistsError:
        pass
    except OSError:
        pass  # SQLite says why when it opens it


def key_encryption_key(name: str) -> bytes | None:
    """A key-encryption key (32 bytes in base64) from `name` or `name`_FILE,
    or None when neither is set. A malformed one stops start-up, saying what
    is wrong with it but never what it is."""
    value = env(name)
    if value is None or not value.strip():
        return None
    try:
        return keyseal.parse_kek(value, f"{name}_FILE" if os.environ.get(f"{name}_FILE") else name)
    except ValueError as exc:
        raise ImproperlyConfigured(str(exc)) from exc


def secret_key(data_dir: str | os.PathLike[str]) -> str:
    """SECRET_KEY from the environment, else one generated once and kept."""
    value = env("SECRET_KEY")
    if value:
        return value
    path = Path(data_dir) / "secret_key"
    if path.exists():
        return path.read_text().strip()
    make_private_dirs(path.parent)
    value = secrets.token_urlsafe(50)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, PRIVATE_FILE)
    with os.fdopen(fd, "w") as handle:
        handle.write(value)
    return value


def server_binary(name: str) -> str:
    """A PostgreSQL server program (pg_ctl): on PATH, or else the newest of
    Debian's /usr/lib/postgresql/<version>/bin, which are not on PATH."""
    import glob
    import shutil

    if shutil.which(name):
        return name
    found = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"), key=lambda path: int(path.split("/")[4]))
    return found[-1] if found else name


# An identity provider reached over plain http could be impersonated by anyone
# on the path, who would then sign in as anyone: http is for a provider on this
# machine only (a test one).
LOOPBACK_HOSTS = ("127.0.0.1", "::1", "localhost")


def oidc_issuer(name: str) -> str:
    """The identity provider's issuer URL, as the provider writes it in its
    discovery document and its tokens, or "" (single sign-on off)."""
    value = (env(name) or "").strip()
    if not value:
        return ""
    parts = urlsplit(value)
    if parts.scheme not in ("https", "http") or not parts.hostname or parts.query or parts.fragment:
        raise ImproperlyConfigured(
            f"{name} must be the identity provider's issuer URL, such as "
            f"https://login.example.org/realms/staff, not {value[:200]!r}"
        )
    if parts.scheme == "http" and parts.hostname not in LOOPBACK_HOSTS:
        raise ImproperlyConfigured(
            f"{name} must use https: over plain http anyone between Strongroom and {parts.hostname} "
            "could hand out their own keys and sign in as anyone"
        )
    return value


def env_choice(name: str, choices: tuple[str, ...], default: str) -> str:
    value = (env(name) or "").strip() or default
    if value not in choices:
        raise ImproperlyConfigured(f"{name} must be one of {', '.join(choices)}, not {value[:80]!r}")
    return value


PASSWORD_SIGN_IN_CHOICES = ("everyone", "break-glass-only")


def refuse_bad_sign_in_settings(
    issuer: str, client_id: str, client_secret: str, password_sign_in: str, break_glass_users: list[str]
) -> None:
    """Half a single sign-on set-up would leave people unable to sign in, or
    believing passwords were off when they are not: it stops start-up, saying
    which variable to set."""
    if not issuer:
        stray = sorted(
            name.removesuffix("_FILE")
            for name, value in os.environ.items()
            if name.startswith("STRONGROOM_OIDC_") and value.strip()
        )
        if stray:
            raise ImproperlyConfigured(
                f"{stray[0]} is set but STRONGROOM_OIDC_ISSUER is not: set the identity provider's "
                "issuer URL to turn single sign-on on, or unset the STRONGROOM_OIDC_ variables"
            )
    else:
        for value, variable in (
            (client_id, "STRONGROOM_OIDC_CLIENT_ID"),
            (client_secret, "STRONGROOM_OIDC_CLIENT_SECRET"),
        ):
            if not value:
                raise ImproperlyConfigured(
                    f"Single sign-on needs {variable} (or {variable}_FILE) too: the values the "
                    "identity provider gave when Strongroom was registered there"
                )
    if password_sign_in == "break-glass-only":
        if not issuer:
            raise ImproperlyConfigured(
                "STRONGROOM_PASSWORD_SIGN_IN=break-glass-only needs single sign-on "
                "(STRONGROOM_OIDC_ISSUER): otherwise only the break-glass users could ever sign in"
            )
        if not break_glass_users:
            raise ImproperlyConfigured(
                "STRONGROOM_PASSWORD_SIGN_IN=break-glass-only needs STRONGROOM_BREAK_GLASS_USERS, the user "
                "names that may still sign in with a password when the identity provider is down"
            )
    elif break_glass_users:
        raise ImproperlyConfigured(
            "STRONGROOM_BREAK_GLASS_USERS is set, but everyone may sign in with a password: "
            "set STRONGROOM_PASSWORD_SIGN_IN=break-glass-only too, or unset STRONGROOM_BREAK_GLASS_USERS"
        )
