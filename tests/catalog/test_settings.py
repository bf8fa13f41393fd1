import pytest
from django.core.exceptions import ImproperlyConfigured

from backupsite import envconfig


def test_it_reads_secrets_from_files(tmp_path, monkeypatch):
    secret = tmp_path / "secret"
    secret.write_text("from-a-file\n")
    monkeypatch.setenv("SECRET_KEY_FILE", str(secret))
    assert envconfig.env("SECRET_KEY") == "from-a-file"


def test_it_refuses_bad_values(monkeypatch):
    monkeypatch.setenv("Q_WORKERS", "lots")
    with pytest.raises(ImproperlyConfigured, match="Q_WORKERS must be a whole number"):
        envconfig.env_int("Q_WORKERS", 2)
    monkeypatch.setenv("DEBUG", "maybe")
    with pytest.raises(ImproperlyConfigured, match="DEBUG must be true or false"):
        envconfig.env_bool("DEBUG", False)


def test_it_parses_database_urls():
    pg = envconfig.database_from_url("postgresql://u:p%40ss@db.example:6543/meta?sslmode=require", "DATABASE_URL")
    assert (pg["NAME"], pg["USER"], pg["PASSWORD"], pg["HOST"], pg["PORT"]) == (
        "meta",
        "u",
        "p@ss",
        "db.example",
        "6543",
    )
    assert pg["OPTIONS"] == {"sslmode": "require"}
    assert envconfig.database_from_url("sqlite:////var/lib/sr.db", "DATABASE_URL")["NAME"] == "/var/lib/sr.db"
    with pytest.raises(ImproperlyConfigured, match="must start with postgresql://"):
        envconfig.database_from_url("mysql://x/y", "DATABASE_URL")


def test_it_keeps_retry_longer_than_timeout():
    from django.conf import settings

    assert settings.Q_CLUSTER["retry"] > settings.Q_CLUSTER["timeout"]
    assert settings.Q_CLUSTER["max_attempts"] == 1
    assert settings.Q_CLUSTER["catch_up"] is False


def test_hosts_sharing_a_metadata_database_are_told_to_share_the_secret_key(settings, monkeypatch):
    from catalog.checks import SECRET_KEY_PER_HOST, check_shared_secret_key

    monkeypatch.setitem(settings.DATABASES["default"], "ENGINE", "django.db.backends.postgresql")
    settings.SECRET_KEY_GENERATED = True
    [warning] = check_shared_secret_key()
    assert warning.id == SECRET_KEY_PER_HOST and "SECRET_KEY_FILE" in warning.hint

    settings.SECRET_KEY_GENERATED = False  # SECRET_KEY or SECRET_KEY_FILE given
    assert check_shared_secret_key() == []
    settings.SECRET_KEY_GENERATED = True
    monkeypatch.setitem(settings.DATABASES["default"], "ENGINE", "django.db.backends.sqlite3")
    assert check_shared_secret_key() == []  # one host's own file
