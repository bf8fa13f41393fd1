"""API tokens for the tests, made through the service, and the header that carries them."""

from django.contrib.auth.models import User

from catalog.api import tokens
from tests.conftest import make_user


def token_owner():
    """The administrator the tests' tokens belong to (every token belongs to someone)."""
    return User.objects.filter(username="token-owner").first() or make_user("token-owner", "Administrators")


def make_token(scopes=("read",), name="CI job", **fields):
    """(token, raw); `fields` are set afterwards (expires_at, revoked_at…)."""
    token, raw = tokens.create_token("test", name, list(scopes), owner=token_owner())
    if fields:
        for field, value in fields.items():
            setattr(token, field, value)
        token.save()
    return token, raw


def bearer(raw):
    return {"Authorization": f"Bearer {raw}"}
