"""API tokens for the tests, made through the service, and the header that carries them."""

from catalog.api import tokens


def make_token(scopes=("read",), name="CI job", **fields):
    """(token, raw); `fields` are set afterwards (expires_at, revoked_at…)."""
    token, raw = tokens.create_token("test", name, list(scopes))
    if fields:
        for field, value in fields.items():
            setattr(token, field, value)
        token.save()
    return token, raw


def bearer(raw):
    return {"Authorization": f"Bearer {raw}"}
