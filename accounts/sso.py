"""Who someone the identity provider vouches for is in Strongroom.

A person is found by the provider's issuer and subject (SingleSignOnIdentity),
never by e-mail or by a name the provider may let its users change. Someone
not known yet is made a person when just-in-time creation is on, linked to
a local user of the same name when linking is on, or refused. At every
sign-in the role follows the provider's groups, when a mapping is set.

Audited: every sign-in, every person made or linked, every role changed, and
each refusal of someone the provider did vouch for (unknown, deactivated).
Refusals before that (a state that does not match, a token that does not
check out) are only logged: anyone can send those, as often as they like, and
the trail is append-only (catalog/lockouts.py reasons the same way)."""

import logging
import re
from collections.abc import Mapping
from typing import Any

from django.conf import settings
from django.contrib.auth.models import User
from django.db import transaction
from django.utils import timezone

from accounts import people
from accounts.models import SingleSignOnIdentity
from accounts.oidc import SignInRefused, issuer_host
from catalog import audit
from catalog.errors import Refused

log = logging.getLogger(__name__)

# What Django allows in a user name, and how long.
NOT_IN_USERNAMES = re.compile(r"[^\w.@+-]")
USERNAME_LENGTH = 150


def provider_actor() -> str:
    """Who the audit trail says did what the provider's word decided."""
    return f"sso: {issuer_host()}"


@transaction.atomic
def person_for(claims: Mapping[str, Any]) -> User:
    """The active person `claims` (checked by accounts/oidc.py) are about,
    made or linked if need be, with their role from the groups; the
    sign-in recorded. Raises SignInRefused, having changed nothing."""
    issuer, subject = settings.OIDC_ISSUER, str(claims["sub"])
    identity = (
        SingleSignOnIdentity.objects.select_for_update()
        .select_related("user")
        .filter(issuer=issuer, subject=subject)
        .first()
    )
    if identity is None:
        identity = new_identity(claims)
    user = identity.user
    if not user.is_active:
        raise SignInRefused(
            "deactivated",
            f"Your Strongroom account ({user.get_username()}) is deactivated; ask an administrator.",
            claims,
        )
    update_from_claims(user, claims)
    identity.last_sign_in_at = timezone.now()
    identity.save(update_fields=["last_sign_in_at"])
    audit.record(user, "auth.sign_in", user, {"method": "sso", "issuer": issuer})
    return user


def new_identity(claims: Mapping[str, Any]) -> SingleSignOnIdentity:
    issuer, subject = settings.OIDC_ISSUER, str(claims["sub"])
    user, how = linked_user(claims), "linked by user name"
    if user is None and settings.OIDC_CREATE_USERS:
        role = role_from_groups(claims)
        user = people.create_person(
            provider_actor(), unused_username(claims), str(claims.get("email") or ""), role or people.NO_ROLE
        )
        how = "created"
    if user is None:
        raise SignInRefused(
            "unknown",
            f"Your account at {settings.OIDC_PROVIDER_NAME} is not set up in Strongroom; ask an administrator.",
            claims,
        )
    identity = SingleSignOnIdentity.objects.create(user=user, issuer=issuer, subject=subject)
    audit.record(provider_actor(), "person.sso_identity", user, {"issuer": issuer, "subject": subject, "how": how})
    return identity


def linked_user(claims: Mapping[str, Any]) -> User | None:
    """The local user named as the provider's preferred_username, when
    linking is on and that user has no identity yet. Never a break-glass
    user: a name at the provider must not be a way into the accounts kept
    for when the provider is down."""
    name = str(claims.get("preferred_username") or "")
    if not (settings.OIDC_LINK_EXISTING_USERS and name) or name in settings.BREAK_GLASS_USERS:
        return None
    return User.objects.filter(username=name, is_active=True, sso_identities__isnull=True).first()


def unused_username(claims: Mapping[str, Any]) -> str:
    """preferred_username, else the e-mail's local part, as Django allows
    user names, with -2, -3 … after it when taken."""
    wanted = str(claims.get("preferred_username") or "") or str(claims.get("email") or "").partition("@")[0]
    base = NOT_IN_USERNAMES.sub("-", wanted)[: USERNAME_LENGTH - 6] or "user"
    candidate, number = base, 2
    while User.objects.filter(username__iexact=candidate).exists():
        candidate, number = f"{base}-{number}", number + 1
    return candidate


def groups_of(claims: Mapping[str, Any]) -> list[str]:
    value = claims.get(settings.OIDC_GROUPS_CLAIM)
    if value is None:
        log.warning(
            "Single sign-on: the provider sent no %r claim; if it should, ask for the scope that carries it "
            "(STRONGROOM_OIDC_SCOPES). Taken as no groups.",
            settings.OIDC_GROUPS_CLAIM,
        )
        return []
    return [str(group) for group in value] if isinstance(value, list) else [str(value)]


def roles_follow_groups() -> bool:
    """Whether single sign-on sets people's roles from their groups at every sign-in."""
    return bool(settings.OIDC_ADMINISTRATOR_GROUPS or settings.OIDC_AUDITOR_GROUPS)


def role_from_groups(claims: Mapping[str, Any]) -> str | None:
    """The role the provider's groups give (administrator wins over auditor,
    neither is no role), or None when no mapping is set."""
    if not roles_follow_groups():
        return None
    groups = set(groups_of(claims))
    if groups & set(settings.OIDC_ADMINISTRATOR_GROUPS):
        return people.ADMINISTRATOR
    if groups & set(settings.OIDC_AUDITOR_GROUPS):
        return people.AUDITOR
    return people.NO_ROLE


def update_from_claims(user: User, claims: Mapping[str, Any]) -> None:
    """The role from the groups (set_role records only a change) and the
    e-mail address, as the provider has them now."""
    role = role_from_groups(claims)
    if role is not None:
        try:
            people.set_role(provider_actor(), user, role)
        except Refused as refusal:
            # The last active administrator keeps the role: nobody could set things right otherwise.
            log.warning("Single sign-on: %s keeps their role: %s", user.get_username(), refusal)
    email = str(claims.get("email") or "")
    if email and email != user.email:
        people.set_email(provider_actor(), user, email)


def record_refusal(refusal: SignInRefused) -> None:
    """Logs every refusal; audits those of someone the provider vouched for."""
    claims = refusal.claims
    log.warning(
        "Single sign-on refused (%s)%s",
        refusal.reason,
        f" for subject {claims.get('sub')!r} ({claims.get('preferred_username')!r})" if claims else "",
    )
    if not claims:
        return
    issuer, subject = settings.OIDC_ISSUER, str(claims["sub"])
    identity = SingleSignOnIdentity.objects.select_related("user").filter(issuer=issuer, subject=subject).first()
    with transaction.atomic():
        audit.record(
            provider_actor(),
            "auth.sso_refused",
            identity.user if identity else None,
            {
                "reason": refusal.reason,
                "issuer": issuer,
                "subject": subject,
                "username": str(claims.get("preferred_username") or ""),
            },
        )
