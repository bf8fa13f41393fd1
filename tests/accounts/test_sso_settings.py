"""Single sign-on's settings refuse, at start-up and in words, what would leave
people unable to sign in or believing passwords were off when they are not."""

import os
import subprocess
import sys
from pathlib import Path

import pytest
from django.core.exceptions import ImproperlyConfigured

from backupsite.envconfig import env_choice, oidc_issuer, refuse_bad_sign_in_settings

BASE_DIR = Path(__file__).resolve().parents[2]
ISSUER = "https://login.example.org/realms/staff"


@pytest.fixture(autouse=True)
def no_sign_in_settings(monkeypatch):
    for name in list(os.environ):
        if name.startswith(("STRONGROOM_OIDC_", "STRONGROOM_PASSWORD_SIGN_IN", "STRONGROOM_BREAK_GLASS")):
            monkeypatch.delenv(name)


def refusal(**given):
    arguments = {
        "issuer": ISSUER,
        "client_id": "strongroom",
        "client_secret": "s3cret",
        "password_sign_in": "everyone",
        "break_glass_users": [],
    }
    with pytest.raises(ImproperlyConfigured) as refused:
        refuse_bad_sign_in_settings(**{**arguments, **given})
    return str(refused.value)


def test_it_accepts_single_sign_on_with_or_without_break_glass_only():
    refuse_bad_sign_in_settings(ISSUER, "strongroom", "s3cret", "everyone", [])
    refuse_bad_sign_in_settings(ISSUER, "strongroom", "s3cret", "break-glass-only", ["root"])
    refuse_bad_sign_in_settings("", "", "", "everyone", [])  # off


def test_it_refuses_break_glass_only_without_single_sign_on_or_without_a_break_glass_user():
    assert "needs single sign-on (STRONGROOM_OIDC_ISSUER)" in refusal(
        issuer="", client_id="", client_secret="", password_sign_in="break-glass-only", break_glass_users=["root"]
    )
    assert "needs STRONGROOM_BREAK_GLASS_USERS" in refusal(password_sign_in="break-glass-only")


def test_it_refuses_break_glass_users_while_everyone_may_use_a_password():
    assert "set STRONGROOM_PASSWORD_SIGN_IN=break-glass-only too" in refusal(break_glass_users=["root"])


def test_it_refuses_an_issuer_without_its_client(monkeypatch):
    assert "needs STRONGROOM_OIDC_CLIENT_ID" in refusal(client_id="")
    assert "needs STRONGROOM_OIDC_CLIENT_SECRET (or STRONGROOM_OIDC_CLIENT_SECRET_FILE)" in refusal(client_secret="")


def test_it_refuses_a_client_without_an_issuer(monkeypatch):
    monkeypatch.setenv("STRONGROOM_OIDC_CLIENT_SECRET_FILE", "/run/secrets/oidc")
    message = refusal(issuer="", client_id="", client_secret="")
    assert message.startswith("STRONGROOM_OIDC_CLIENT_SECRET is set but STRONGROOM_OIDC_ISSUER is not")


def test_the_issuer_is_an_https_url_or_a_loopback_one(monkeypatch):
    monkeypatch.setenv("STRONGROOM_OIDC_ISSUER", " https://login.example.org/realms/staff ")
    assert oidc_issuer("STRONGROOM_OIDC_ISSUER") == ISSUER
    monkeypatch.setenv("STRONGROOM_OIDC_ISSUER", "http://127.0.0.1:8123")
    assert oidc_issuer("STRONGROOM_OIDC_ISSUER") == "http://127.0.0.1:8123"
    monkeypatch.setenv("STRONGROOM_OIDC_ISSUER", "http://login.example.org")
    with pytest.raises(ImproperlyConfigured, match="must use https: over plain http anyone between"):
        oidc_issuer("STRONGROOM_OIDC_ISSUER")
    for bad in ("login.example.org", "ftp://login.example.org", "https://login.example.org/?realm=staff"):
        monkeypatch.setenv("STRONGROOM_OIDC_ISSUER", bad)
        with pytest.raises(ImproperlyConfigured, match="must be the identity provider's issuer URL"):
            oidc_issuer("STRONGROOM_OIDC_ISSUER")


def test_password_sign_in_is_one_of_two_words(monkeypatch):
    choices = ("everyone", "break-glass-only")
    assert env_choice("STRONGROOM_PASSWORD_SIGN_IN", choices, "everyone") == "everyone"
    monkeypatch.setenv("STRONGROOM_PASSWORD_SIGN_IN", "nobody")
    with pytest.raises(ImproperlyConfigured, match="must be one of everyone, break-glass-only, not 'nobody'"):
        env_choice("STRONGROOM_PASSWORD_SIGN_IN", choices, "everyone")


def test_start_up_stops_with_the_message(tmp_path):
    """The settings module itself refuses, before anything runs."""
    environment = {
        key: value for key, value in os.environ.items() if not key.startswith(("STRONGROOM_", "DJANGO_SETTINGS"))
    }
    environment.update(
        STRONGROOM_DATA_DIR=str(tmp_path),
        STRONGROOM_PASSWORD_SIGN_IN="break-glass-only",
        STRONGROOM_BREAK_GLASS_USERS="root",
        DJANGO_SETTINGS_MODULE="backupsite.settings",
    )
    environment.pop("DATABASE_URL", None)
    started = subprocess.run(
        [sys.executable, "manage.py", "check"], cwd=BASE_DIR, env=environment, capture_output=True, text=True
    )
    assert started.returncode != 0
    assert "STRONGROOM_PASSWORD_SIGN_IN=break-glass-only needs single sign-on" in started.stderr
