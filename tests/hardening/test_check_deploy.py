"""`manage.py check --deploy` is clean with production settings, and the
security settings follow the environment as the README says. Each runs the
real settings module in a subprocess with an environment of its own (the
test process's settings are tests/settings.py)."""

import json
import os
import secrets
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
# What the subprocesses inherit: enough to run Python, none of the test run's settings.
KEPT = ("PATH", "HOME", "LANG", "LC_ALL", "TMPDIR")


def environment(tmp_path, **values):
    env = {name: os.environ[name] for name in KEPT if name in os.environ}
    env.update(STRONGROOM_DATA_DIR=str(tmp_path / "data"), DJANGO_SETTINGS_MODULE="backupsite.settings", **values)
    return env


def production(tmp_path, **values):
    return environment(
        tmp_path,
        DEBUG="0",
        SECRET_KEY=secrets.token_urlsafe(64),
        SECURE_COOKIES="1",
        ALLOWED_HOSTS="backups.example.org",
        SITE_URL="https://backups.example.org",
        **values,
    )


def check_deploy(env):
    return subprocess.run(
        [sys.executable, "manage.py", "check", "--deploy", "--fail-level", "WARNING"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )


def security_settings(env):
    code = (
        "import json; from django.conf import settings as s; print(json.dumps({n: getattr(s, n, None) for n in ["
        "'SECURE_SSL_REDIRECT', 'SECURE_HSTS_SECONDS', 'SECURE_HSTS_INCLUDE_SUBDOMAINS', 'SECURE_HSTS_PRELOAD', "
        "'SECURE_PROXY_SSL_HEADER', 'SESSION_COOKIE_SECURE', 'CSRF_COOKIE_SECURE', 'SESSION_COOKIE_AGE', "
        "'SESSION_EXPIRE_AT_BROWSER_CLOSE', 'AXES_FAILURE_LIMIT', 'X_FRAME_OPTIONS']}, default=str))"
    )
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def test_check_deploy_is_clean_with_production_settings(tmp_path):
    result = check_deploy(production(tmp_path))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "System check identified no issues (1 silenced)." in result.stdout, result.stdout + result.stderr
    assert "WARNINGS" not in result.stdout + result.stderr


def test_check_deploy_names_what_a_quick_start_lacks(tmp_path):
    """The same command fails, naming each setting, where the defaults are for one machine on plain http."""
    result = check_deploy(environment(tmp_path, DEBUG="1"))
    assert result.returncode == 1
    for check in ("security.W004", "security.W008", "security.W012", "security.W016", "security.W018"):
        assert check in result.stderr, check


def test_tls_settings_follow_the_environment(tmp_path):
    plain = security_settings(environment(tmp_path))
    assert plain["SECURE_HSTS_SECONDS"] == 0 and plain["SECURE_SSL_REDIRECT"] is False
    assert plain["SECURE_PROXY_SSL_HEADER"] is None and plain["SESSION_COOKIE_SECURE"] is False
    assert plain["SESSION_COOKIE_AGE"] == 12 * 3600 and plain["SESSION_EXPIRE_AT_BROWSER_CLOSE"] is False
    assert plain["AXES_FAILURE_LIMIT"] == 5 and plain["X_FRAME_OPTIONS"] == "DENY"

    tls = security_settings(production(tmp_path))
    assert tls["SECURE_HSTS_SECONDS"] == 31536000 and tls["SECURE_HSTS_INCLUDE_SUBDOMAINS"] is True
    assert tls["SECURE_SSL_REDIRECT"] is True and tls["SECURE_HSTS_PRELOAD"] is False
    assert tls["SESSION_COOKIE_SECURE"] is True and tls["CSRF_COOKIE_SECURE"] is True

    proxied = security_settings(
        production(
            tmp_path,
            SECURE_PROXY_SSL_HEADER="X-Forwarded-Proto",
            SECURE_HSTS_SECONDS="600",
            SECURE_SSL_REDIRECT="0",
            SESSION_COOKIE_AGE="3600",
            SESSION_EXPIRE_AT_BROWSER_CLOSE="1",
            LOGIN_FAILURE_LIMIT="3",
        )
    )
    assert proxied["SECURE_PROXY_SSL_HEADER"] == ["HTTP_X_FORWARDED_PROTO", "https"]
    assert proxied["SECURE_HSTS_SECONDS"] == 600 and proxied["SECURE_SSL_REDIRECT"] is False
    assert proxied["SESSION_COOKIE_AGE"] == 3600 and proxied["SESSION_EXPIRE_AT_BROWSER_CLOSE"] is True
    assert proxied["AXES_FAILURE_LIMIT"] == 3


@pytest.mark.parametrize("name, value", [("SECURE_HSTS_SECONDS", "a year"), ("LOGIN_FAILURE_LIMIT", "0")])
def test_a_bad_value_stops_start_up_naming_the_variable(tmp_path, name, value):
    result = check_deploy(production(tmp_path, **{name: value}))
    assert result.returncode != 0
    assert "ImproperlyConfigured" in result.stderr and name in result.stderr
