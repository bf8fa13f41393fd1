"""API tokens: creating, revoking, and recognising them.

A raw token leaves this module exactly once, as the return value of
`create_token`, for the page that shows it to its creator. The database keeps
only its SHA-256 and a short prefix to recognise it by."""

import secrets
from collections.abc import Iterable
from datetime import datetime, timedelta
from typing import Any

from django.contrib.auth.models import User
from django.db import transaction
from django.utils import timezone

from catalog import audit
from catalog.api.models import ApiToken
from catalog.services import Refused

RAW_PREFIX = "sr_"
# "sr_" and seven random characters: enough to tell tokens apart in a list,
# while the other 36 random characters (over 200 bits) stay secret.
PREFIX_LENGTH = 10


class TokenRejected(Exception):
    """The bearer token is not one we accept; str() says why, for the caller."""


@transaction.atomic
def create_token(
    actor: audit.Actor,
    name: str,
    scopes: Iterable[str],
    expires_in_days: int | None = None,
    owner: User | None = None,
) -> tuple[ApiToken, str]:
    """Returns (token, raw). Show `raw` once and forget it. The token belongs
    to `owner` (by default the signed-in person making it): it stops working
    when they are deactivated, and only reads once they are no longer an
    administrator."""
    owner = owner or audit.user_of(actor)
    if owner is None:
        raise Refused("An API token belongs to a person: say whose it is.")
    if not owner.is_active:
        raise Refused(f"{owner.get_username()} is deactivated: their tokens would be refused.")
    raw = RAW_PREFIX + secrets.token_urlsafe(32)
    expires_at = timezone.now() + timedelta(days=expires_in_days) if expires_in_days else None
    token = ApiToken.objects.create(
        name=name,
        prefix=raw[:PREFIX_LENGTH],
        token_hash=ApiToken.hash(raw),
        scopes=sorted(scopes),
        expires_at=expires_at,
        created_by=owner,
    )
    audit.record(
        actor,
        "token.create",
        token,
        {
            "name": name,
            "prefix": token.prefix,
            "scopes": token.scopes,
            "expires_at": expires_at.isoformat() if expires_at else None,
            "owner": owner.get_username(),
        },
    )
    return token, raw


@transaction.atomic
def revoke_token(actor: audit.Actor, token: ApiToken) -> ApiToken:
    # A conditional update, so two clicks make one revocation and one event.
    if not ApiToken.objects.filter(pk=token.pk, revoked_at__isnull=True).update(revoked_at=timezone.now()):
        raise Refused(f"Token {token} was already revoked.")
    token.refresh_from_db()
    audit.record(actor, "token.revoke", token, {"name": token.name, "prefix": token.prefix})
    return token


def status_of(token: ApiToken, now: datetime | None = None) -> str:
    """In words, for the list: active, expired or revoked."""
    if token.revoked_at is not None:
        return "revoked"
    return "expired" if token.is_expired(now) else "active"


def actor_label(token: ApiToken) -> str:
    """Who an API call acts as, in the audit trail and on backups."""
    return f"api token {token.name}"


def authenticate(raw: str) -> ApiToken:
    """The usable token for `raw`, or TokenRejected saying why not."""
    token = ApiToken.objects.filter(token_hash=ApiToken.hash(raw)).select_related("created_by").first()
    if token is None:
        raise TokenRejected("Unknown API token.")
    if token.revoked_at is not None:
        raise TokenRejected(f"This API token was revoked at {token.revoked_at:%Y-%m-%d %H:%M} UTC.")
    if token.is_expired():
        raise TokenRejected(f"This API token expired at {token.expires_at:%Y-%m-%d %H:%M} UTC.")
    # A token acts for the person who made it: once their account is
    # deactivated, neither their password nor their tokens let anyone in.
    if token.created_by is not None and not token.created_by.is_active:
        raise TokenRejected(
            f"This API token belongs to {token.created_by.get_username()}, whose account is deactivated."
        )
    return token


def record_use(token: ApiToken, endpoint: str, changes: dict[str, Any], audited: bool = True) -> None:
    """Notes that `token` was used: last_used_at always, an audit event
    unless the caller is a frequent scraper (see catalog.api.metrics)."""
    with transaction.atomic():
        now = timezone.now()
        ApiToken.objects.filter(pk=token.pk).update(last_used_at=now)
        token.last_used_at = now
        if audited:
            audit.record(actor_label(token), f"api.{endpoint}", token, changes)
