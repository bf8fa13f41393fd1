"""deploy/install-debian.sh, run on this machine as an administrator would:
into a throwaway root (install, data, key, config and systemd directories)
with a throwaway service user, twice (the second run changes nothing), then
Strongroom started from what it installed, as that user, against SQLite.

The script really installs: Debian packages when some are missing, and the
virtualenv from the package index pip is set up for (about 20 s here, with
pip's cache; nothing is borrowed from the checkout's .venv)."""

import contextlib
import grp
import json
import os
import pwd
import shutil
import signal
import stat
import subprocess
import tempfile
import time
import urllib.request
from pathlib import Path

import psutil
import pytest

from tests.harness.pg import free_port

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = ROOT / "deploy" / "install-debian.sh"
USER = "strongroom-it"
ADMIN_PASSWORD = "install-script-Pa55"

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(os.geteuid() != 0, reason="the install script makes a user and installs packages: root only"),
    pytest.mark.skipif(shutil.which("apt-get") is None, reason="the install script is for Debian (no apt-get here)"),
]


def exists(kind, name):
    try:
        (pwd.getpwnam if kind == "user" else grp.getgrnam)(name)
    except KeyError:
        return False
    return True


@pytest.fixture(scope="module")
def install():
    """The paths of one install into a temporary root, and `run()` to run the script on them."""
    made_user = not exists("user", USER)
    made_group = not exists("group", USER)
    # The service user must pass through it to its directories (mkdtemp makes it 0700).
    top = Path(tempfile.mkdtemp(prefix="strongroom-install-"))
    top.chmod(0o755)
    paths = {
        "app": top / "opt" / "strongroom",
        "data": top / "var" / "lib" / "strongroom",
        # Its own path, outside the data directory, as a separate volume would be.
        "keys": top / "srv" / "strongroom-keys",
        "config": top / "etc" / "strongroom",
        "systemd": top / "systemd",
    }

    def run():
        arguments = ["--user", USER, "--app-dir", paths["app"], "--data-dir", paths["data"], "--key-dir", paths["keys"]]
        arguments += ["--config-dir", paths["config"], "--systemd-dir", paths["systemd"]]
        done = subprocess.run(
            ["bash", SCRIPT, *map(str, arguments)],
            capture_output=True,
            text=True,
            timeout=900,
            stdin=subprocess.DEVNULL,
        )
        assert done.returncode == 0, done.stdout + done.stderr
        return done.stdout

    yield paths, run
    shutil.rmtree(top, ignore_errors=True)
    if made_user:
        subprocess.run(["userdel", USER], check=False)
    if made_group and exists("group", USER):
        subprocess.run(["groupdel", USER], check=False)


@pytest.fixture(scope="module")
def installed(install):
    """Installed twice: what the second run printed, and the secret key's bytes after each run."""
    paths, run = install
    run()
    first_secret = (paths["config"] / "secret_key").read_bytes()
    second_output = run()
    return {"again": second_output, "secrets": (first_secret, (paths["config"] / "secret_key").read_bytes())}


def as_service_user(paths, *command, extra=()):
    """`command` as the service user, in the install directory, with the
    settings of the env file the script wrote and nothing of ours."""
    settings = [
        line
        for line in (paths["config"] / "strongroom.env").read_text().splitlines()
        if line and not line.startswith("#")
    ]
    environment = ["PATH=/usr/bin:/bin", "LANG=C.UTF-8", *settings, *extra]
    return ["runuser", "-u", USER, "--", "env", "-i", *environment, *command]


def owner_and_mode(path):
    info = path.stat()
    return pwd.getpwuid(info.st_uid).pw_name, grp.getgrgid(info.st_gid).gr_name, stat.S_IMODE(info.st_mode)


def test_a_second_run_changes_nothing(install, installed):
    paths, _ = install

    assert "Virtualenv" in installed["again"] and "up to date" in installed["again"]
    assert "Generating the secret key" not in installed["again"]
    first, second = installed["secrets"]
    assert first == second and len(first.strip()) >= 50


def test_it_leaves_the_data_and_keys_to_the_service_user_and_the_code_to_root(install, installed):
    paths, _ = install

    assert owner_and_mode(paths["data"]) == (USER, USER, 0o700)
    assert owner_and_mode(paths["keys"]) == (USER, USER, 0o700)
    assert owner_and_mode(paths["config"]) == ("root", USER, 0o750)
    assert owner_and_mode(paths["config"] / "strongroom.env") == ("root", USER, 0o640)
    assert owner_and_mode(paths["config"] / "secret_key") == ("root", USER, 0o640)
    # Migrated as the service user: the metadata database is its own, private.
    assert owner_and_mode(paths["data"] / "strongroom.sqlite3") == (USER, USER, 0o600)
    # The secret key comes from the config directory, so none is generated beside the data.
    assert not (paths["data"] / "secret_key").exists()
    user = pwd.getpwnam(USER)
    assert (user.pw_dir, user.pw_shell) == (str(paths["data"]), "/usr/sbin/nologin")
    assert owner_and_mode(paths["app"] / "manage.py")[:2] == ("root", "root")
    cannot_write = subprocess.run(["runuser", "-u", USER, "--", "test", "-w", paths["app"] / "manage.py"])
    assert cannot_write.returncode == 1
    assert not (paths["app"] / ".git").exists() and not (paths["app"] / "data").exists()


def test_the_systemd_units_name_this_install(install, installed):
    paths, _ = install

    web = (paths["systemd"] / "strongroom-web.service").read_text().splitlines()
    assert f"User={USER}" in web and f"Group={USER}" in web
    assert f"WorkingDirectory={paths['app']}" in web
    assert f"EnvironmentFile={paths['config'] / 'strongroom.env'}" in web
    # The key directory is outside the data directory, so the units may write there too.
    assert f"ReadWritePaths={paths['data']} {paths['keys']}" in web
    if shutil.which("systemd-analyze"):
        units = sorted(str(unit) for unit in paths["systemd"].iterdir())
        done = subprocess.run(["systemd-analyze", "verify", "--man=no", *units], capture_output=True, text=True)
        assert done.returncode == 0 and done.stdout + done.stderr == "", done.stdout + done.stderr


def test_it_serves_as_the_service_user_from_what_was_installed(install, installed):
    paths, _ = install
    python = str(paths["app"] / ".venv" / "bin" / "python")
    cwd = paths["app"]
    run = subprocess.run(
        as_service_user(paths, python, "manage.py", "migrate", "--noinput"), cwd=cwd, capture_output=True, text=True
    )
    assert run.returncode == 0 and "No migrations to apply" in run.stdout, run.stdout + run.stderr
    extra = [f"STRONGROOM_ADMIN_PASSWORD={ADMIN_PASSWORD}"]
    run = subprocess.run(
        as_service_user(paths, python, "manage.py", "bootstrap", extra=extra), cwd=cwd, capture_output=True, text=True
    )
    assert run.returncode == 0, run.stdout + run.stderr
    keys = list(paths["keys"].glob("*.key"))
    assert len(keys) == 1 and owner_and_mode(keys[0]) == (USER, USER, 0o600)

    port = free_port()
    server = subprocess.Popen(
        as_service_user(paths, python, "manage.py", "serve", "--bind", f"127.0.0.1:{port}"),
        cwd=cwd,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        answer = wait_for_json(f"http://127.0.0.1:{port}/healthz", server)
        assert answer == {"alive": True}
        # Everything serve started (gunicorn, the clusters, the WAL supervisor) is the service user's.
        processes = psutil.Process(server.pid).children(recursive=True)
        assert len(processes) >= 5
        assert {process.username() for process in processes} == {USER}
    finally:
        stop_group(server)


def wait_for_json(url, server, timeout=90):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise AssertionError(f"serve stopped: {server.stdout.read().decode()}")
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                return json.loads(response.read())
        except OSError:
            time.sleep(0.3)
    raise AssertionError(f"{url} did not answer within {timeout} s")


def stop_group(process):
    """Stops serve and its children (one process group), as Ctrl-C would, then for good."""
    try:
        os.killpg(process.pid, signal.SIGTERM)
        process.wait(timeout=40)
    except subprocess.TimeoutExpired:
        pass
    except ProcessLookupError:
        return
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGKILL)
    process.wait()
