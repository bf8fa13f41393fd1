"""The first hour of a new administrator: `make run` installs only what
running needs and says what it is doing, its last lines say where to sign in,
as whom, and where the generated password is (a file only the service user
reads, never the console); a forgotten password or a lockout has a documented
way out; the login page is Strongroom's, with an icon."""

import ast
import os
import re
import signal
import stat
import subprocess
import sys
import time
import urllib.request
from importlib import metadata
from io import StringIO
from pathlib import Path

import psutil
import pytest
from django.contrib.auth.models import Group, Permission, User
from django.core.management import call_command
from django.urls import reverse
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from catalog import admin_password
from catalog.models import AuditEvent
from catalog.roles import grant_roles
from tests.harness.pg import free_port

ROOT = Path(__file__).resolve().parent.parent
APP_CODE = ["backupsite", "catalog", "restore", "pitr", "drills", "compliance", "accounts", "manage.py"]
LOCAL_MODULES = {"backupsite", "catalog", "restore", "pitr", "drills", "compliance", "accounts", "tests", "bench"}
TEST_TOOLS = {
    "pytest",
    "pytest-django",
    "moto",
    "playwright",
    "hypothesis",
    "time-machine",
    "pytest-httpserver",
    "aiosmtpd",
    "schemathesis",
    "pypdf",
    "psutil",
}


# --- what `make run` installs ----------------------------------------------------------


def requirement_lines(name):
    lines = [line.split("#")[0].strip() for line in (ROOT / name).read_text().splitlines()]
    return [line for line in lines if line]


def requirements(name):
    return [Requirement(line) for line in requirement_lines(name) if not line.startswith("-r")]


def installed_closure(roots):
    """Canonical names of the distributions `roots` bring in (with their extras)."""
    seen, todo = set(), list(roots)
    while todo:
        requirement = todo.pop()
        key = (canonicalize_name(requirement.name), frozenset(requirement.extras))
        if key in seen:
            continue
        seen.add(key)
        try:
            needs = metadata.requires(requirement.name) or []
        except metadata.PackageNotFoundError:
            continue
        for line in needs:
            dependency = Requirement(line)
            extras = requirement.extras or {""}
            if dependency.marker and not any(dependency.marker.evaluate({"extra": extra}) for extra in extras):
                continue
            todo.append(dependency)
    return {name for name, _extras in seen}


def type_checking_only(tree):
    """The nodes under `if TYPE_CHECKING:`, which never run (types for mypy only)."""
    return {
        id(child)
        for node in ast.walk(tree)
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test)
        for stmt in node.body
        for child in ast.walk(stmt)
    }


def imported_modules(paths):
    """Top-level names of every module the files under `paths` import when they run."""
    names = set()
    for entry in paths:
        path = ROOT / entry
        for file in [path] if path.is_file() else path.rglob("*.py"):
            tree = ast.parse(file.read_text(), str(file))
            skipped = type_checking_only(tree)
            for node in ast.walk(tree):
                if id(node) in skipped:
                    continue
                if isinstance(node, ast.Import):
                    names |= {alias.name.split(".")[0] for alias in node.names}
                elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                    names.add(node.module.split(".")[0])
    return names - set(sys.stdlib_module_names) - LOCAL_MODULES


def test_running_installs_no_test_tool_and_everything_the_code_imports():
    run_names = {canonicalize_name(r.name) for r in requirements("requirements.txt")}
    test_names = {canonicalize_name(r.name) for r in requirements("requirements-test.txt")}
    assert not run_names & TEST_TOOLS, "test tools belong in requirements-test.txt"
    assert test_names >= TEST_TOOLS
    assert "-r requirements.txt" in requirement_lines("requirements-test.txt")

    provided = installed_closure(requirements("requirements.txt"))
    owners = metadata.packages_distributions()
    missing = {
        module
        for module in imported_modules(APP_CODE)
        if not {canonicalize_name(d) for d in owners.get(module, [])} & provided
    }
    assert not missing, f"imported by the application but not installed by requirements.txt: {sorted(missing)}"


def make_dry_run(target):
    result = subprocess.run(["make", "-n", "-B", target], cwd=ROOT, capture_output=True, text=True, check=True)
    return result.stdout


def test_make_run_says_each_stage_and_make_test_adds_the_test_tools():
    run = make_dry_run("run")
    assert "-r requirements.txt" in run and "requirements-test.txt" not in run
    stages = re.findall(r"^echo \"==> (.+)\"$", run, re.MULTILINE)
    assert len(stages) >= 4 and any("requirements.txt" in stage for stage in stages)
    # pip says what it installs as it goes: no minutes of silence.
    pip = [line for line in run.splitlines() if "-r requirements.txt" in line]
    assert pip and not any("--quiet" in line or " -q" in line for line in pip)

    test = make_dry_run("test")
    assert "-r requirements.txt" in test and "-r requirements-test.txt" in test and "pytest" in test


# --- the generated password ------------------------------------------------------------


@pytest.fixture
def data_dir(settings, tmp_path, monkeypatch):
    monkeypatch.delenv("STRONGROOM_ADMIN_PASSWORD", raising=False)
    settings.DATA_DIR = tmp_path / "data"
    settings.KEY_DIR = tmp_path / "data" / "keys"
    settings.DATA_DIR.mkdir(mode=0o700)
    grant_roles(Group, Permission)  # a transactional test may have flushed the groups
    return settings.DATA_DIR


def mode(path):
    return stat.S_IMODE(path.stat().st_mode)


@pytest.mark.django_db
def test_bootstrap_puts_the_generated_password_in_a_private_file_not_on_the_console(data_dir):
    previous = os.umask(0o022)  # as a login shell has it: the file must be private anyway
    try:
        out = StringIO()
        call_command("bootstrap", stdout=out)
    finally:
        os.umask(previous)

    path = data_dir / "admin-password"
    password = path.read_text().strip()
    assert mode(path) == 0o600
    assert User.objects.get(username="admin").check_password(password)
    assert password not in out.getvalue() and str(path) in out.getvalue()


@pytest.mark.django_db
def test_sign_in_lines_name_the_address_the_user_and_the_password_file(data_dir):
    call_command("bootstrap", stdout=StringIO())
    lines = "\n".join(admin_password.sign_in_lines("http://127.0.0.1:8000/"))
    assert "http://127.0.0.1:8000/" in lines and "sign in as admin" in lines
    assert str(data_dir / "admin-password") in lines and "readable only by" in lines

    # Changed since: the file no longer signs in, so it is neither pointed at nor kept.
    admin = User.objects.get(username="admin")
    admin.set_password("chosen by the administrator")
    admin.save()
    lines = "\n".join(admin_password.sign_in_lines("http://127.0.0.1:8000/"))
    assert "sign in as admin" in lines and "generated password" not in lines
    assert not (data_dir / "admin-password").exists()


@pytest.mark.django_db
def test_reset_admin_password_writes_a_new_one_clears_the_lockout_and_is_audited(data_dir, client, settings):
    call_command("bootstrap", stdout=StringIO())
    old = (data_dir / "admin-password").read_text().strip()
    for _ in range(settings.AXES_FAILURE_LIMIT):
        client.post(reverse("login"), {"username": "admin", "password": "wrong"})
    assert client.post(reverse("login"), {"username": "admin", "password": old}).status_code == 429

    out = StringIO()
    call_command("reset_admin_password", "admin", stdout=out)

    new = (data_dir / "admin-password").read_text().strip()
    assert new != old and mode(data_dir / "admin-password") == 0o600
    assert new not in out.getvalue() and str(data_dir / "admin-password") in out.getvalue()
    signed_in = client.post(reverse("login"), {"username": "admin", "password": new})
    assert signed_in.status_code == 302 and signed_in["Location"] == reverse("dashboard")
    event = AuditEvent.objects.get(action="user.password_reset")
    assert event.changes["username"] == "admin" and event.changes["lockouts_cleared"] >= 1
    assert new not in str(event.changes)


@pytest.mark.django_db
def test_reset_admin_password_names_what_is_wrong(data_dir):
    with pytest.raises(Exception, match="no administrator yet"):
        call_command("reset_admin_password")
    User.objects.create_user("bob", "", "x")
    with pytest.raises(Exception, match="bob is not an administrator"):
        call_command("reset_admin_password", "bob")


# --- the login page ---------------------------------------------------------------------


def test_the_login_page_is_strongrooms_with_an_icon(client, db, settings):
    settings.ALLOWED_HOSTS = [*settings.ALLOWED_HOSTS, "backups.example.org"]
    page = client.get(reverse("login"), HTTP_HOST="backups.example.org").content.decode()
    assert re.search(r"<title>Log in · Strongroom</title>", page)
    assert "backups.example.org" not in page and "<h1>▣ Strongroom</h1>" in page
    assert 'rel="icon" href="/static/img/favicon.svg"' in page

    favicon = client.get("/favicon.ico")  # anonymous: the icon, not the login page
    assert favicon.status_code == 301 and favicon["Location"] == "/static/img/favicon.svg"
    assert (ROOT / "static" / "img" / "favicon.svg").read_text().startswith("<svg")


# --- `make run`'s last lines, from a real start ----------------------------------------------


@pytest.mark.slow
def test_the_first_start_ends_with_how_to_sign_in(tmp_path):
    port = free_port()
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in ("DATABASE_URL", "DJANGO_SETTINGS_MODULE", "REDIS_URL", "STRONGROOM_ADMIN_PASSWORD")
    }
    env.update(
        STRONGROOM_DATA_DIR=str(tmp_path / "data"),
        STRONGROOM_BIND=f"127.0.0.1:{port}",
        DJANGO_SETTINGS_MODULE="backupsite.settings",
    )
    manage = [sys.executable, "manage.py"]
    subprocess.run(manage + ["migrate", "--noinput", "-v", "0"], cwd=ROOT, env=env, check=True)
    subprocess.run(manage + ["bootstrap"], cwd=ROOT, env=env, check=True, capture_output=True)
    password_file = tmp_path / "data" / "admin-password"
    # In a process group of its own, as a terminal runs it: Ctrl-C goes to the whole group.
    server = subprocess.Popen(
        manage + ["serve"],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        process_group=0,
    )
    lines = []
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and not any(line.startswith("Forgot it?") for line in lines):
            lines.append(server.stdout.readline().rstrip("\n"))
        assert any(line.startswith("Forgot it?") for line in lines), "\n".join(lines)
        # The icon as a browser gets it from the real server (static files through WhiteNoise).
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/favicon.ico", timeout=10) as icon:
            assert icon.headers["Content-Type"] == "image/svg+xml" and icon.read().startswith(b"<svg")
        workers = psutil.Process(server.pid).children(recursive=True)
        assert len(workers) >= 4
    finally:
        os.killpg(server.pid, signal.SIGINT)  # Ctrl-C
        rest, _ = server.communicate(timeout=40)
    # Everything it started stopped with it, the qclusters' workers too.
    _gone, alive = psutil.wait_procs(workers, timeout=10)
    for process in alive:
        process.kill()
    assert not alive, f"left running after Ctrl-C: {[' '.join(p.cmdline()) for p in alive]}"
    assert "Stopped." in rest

    output = "\n".join(lines)
    block = output[output.rindex("─" * 72, 0, output.rindex("Forgot it?")) :]
    assert f"Open http://127.0.0.1:{port}/ and sign in as admin" in block
    assert f"with the generated password in {password_file}" in block
    # It comes after the web server's and the workers' start-up lines.
    assert output.index("Listening at: http://127.0.0.1") < output.index(block)  # gunicorn's line
    assert output.index("Q Cluster") < output.index(block)
    assert password_file.read_text().strip() not in output + rest
