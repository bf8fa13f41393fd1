"""The first administrator's generated password, and how to sign in.

A generated password goes to a file in the data directory that only the
service user can read (0600), never to the console: `make run`'s output may
end up in a terminal's scrollback or a service log (rule 6). The console says
where the file is, at the very end of `make run`'s output (catalog/management/
commands/serve.py), and `manage.py reset_admin_password` writes a new one.
"""

import getpass
import os
import secrets
import tempfile
from pathlib import Path

from django.conf import settings
from django.contrib.auth import get_user_model
from django.contrib.auth.models import User

FILE_NAME = "admin-password"
DEFAULT_USERNAME = "admin"


def password_file() -> Path:
    return Path(settings.DATA_DIR) / FILE_NAME


def generate() -> str:
    return secrets.token_urlsafe(12)


def save(password: str) -> Path:
    """Writes `password` to the password file, mode 0600 whatever the umask,
    replacing the file at once (never a moment with half a password)."""
    path = password_file()
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    fd, temp = tempfile.mkstemp(dir=path.parent, prefix=f".{FILE_NAME}-")
    try:
        os.fchmod(fd, 0o600)
        with os.fdopen(fd, "w") as handle:
            handle.write(password + "\n")
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temp, path)
    except BaseException:
        if os.path.exists(temp):
            os.unlink(temp)
        raise
    return path


def saved_password() -> str | None:
    try:
        return password_file().read_text().strip() or None
    except (FileNotFoundError, NotADirectoryError):
        return None


def first_administrator() -> User | None:
    """The administrator bootstrap made ('admin'), else the oldest superuser."""
    users = get_user_model().objects.filter(is_superuser=True, is_active=True)
    return users.filter(username=DEFAULT_USERNAME).first() or users.order_by("pk").first()


def sign_in_lines(url: str) -> list[str]:
    """How to sign in, in a few lines: the address, the user, and where the
    password is. A saved password that no longer signs in (it was changed
    since) is deleted rather than pointed at."""
    admin = first_administrator()
    if admin is None:
        return [f"Open {url}", "No administrator yet: run `.venv/bin/python manage.py bootstrap`."]
    lines = [f"Open {url} and sign in as {admin.get_username()}"]
    saved = saved_password()
    if saved and admin.check_password(saved):
        lines.append(f"with the generated password in {password_file()}")
        lines.append(f"(readable only by {getpass.getuser()}): sign in, then change it (Admin → Change password).")
    else:
        if saved:
            password_file().unlink(missing_ok=True)  # a stale secret helps nobody
        if os.environ.get("STRONGROOM_ADMIN_PASSWORD") or os.environ.get("STRONGROOM_ADMIN_PASSWORD_FILE"):
            lines.append("with the password from STRONGROOM_ADMIN_PASSWORD.")
        else:
            lines.append("with your password.")
    lines.append(
        f"Forgot it? `.venv/bin/python manage.py reset_admin_password {admin.get_username()}` "
        f"writes a new one to {password_file()}."
    )
    return lines
