"""People and their roles: adding, changing, deactivating, resetting.

A role is membership of one of the two groups (catalog/roles.py): an
administrator changes anything, an auditor only looks, and a person with
neither sees no page. Every change is audited in its own transaction, and the
last active administrator can be neither demoted nor deactivated: with
nobody left to sign in as one, only a shell on the server could set things
right."""

from dataclasses import dataclass

from django.conf import settings
from django.contrib.auth.models import Group, User
from django.contrib.auth.tokens import default_token_generator
from django.db import transaction
from django.db.models import Q, QuerySet
from django.utils.encoding import force_bytes
from django.utils.http import urlsafe_base64_encode

from catalog import audit
from catalog.errors import Refused
from catalog.roles import ADMINISTRATORS, AUDITORS

ADMINISTRATOR = "administrator"
AUDITOR = "auditor"
NO_ROLE = "none"
ROLE_CHOICES = [
    (ADMINISTRATOR, "Administrator: changes anything"),
    (AUDITOR, "Auditor: sees everything, changes nothing"),
    (NO_ROLE, "None: may sign in, sees no page"),
]
ROLE_GROUPS = {ADMINISTRATOR: ADMINISTRATORS, AUDITOR: AUDITORS}
ROLE_LABELS = {ADMINISTRATOR: "Administrator", AUDITOR: "Auditor", NO_ROLE: "No role"}


def active_administrators() -> QuerySet[User]:
    return User.objects.filter(Q(is_superuser=True) | Q(groups__name=ADMINISTRATORS), is_active=True).distinct()


def assigned_role(user: User) -> str:
    """The role given to `user`, also while deactivated (when Django grants
    them no permission at all, so `role_of` says None)."""
    names = {group.name for group in user.groups.all()}
    if user.is_superuser or ADMINISTRATORS in names:
        return ADMINISTRATOR
    return AUDITOR if AUDITORS in names else NO_ROLE


def role_label(user: User) -> str:
    return ROLE_LABELS[assigned_role(user)]


@dataclass
class Person:
    """One row of the people page: what an administrator wants to know at a glance."""

    user: User
    role: str
    role_label: str
    sign_in_methods: list[str]
    token_count: int | None
    two_factor: bool


def summary(user: User, two_factor: bool) -> Person:
    methods = []
    if user.has_usable_password():
        methods.append("password")
    if user.sso_identities.all():
        methods.append("single sign-on")
    role = assigned_role(user)
    return Person(user, role, ROLE_LABELS[role], methods, getattr(user, "token_count", None), two_factor)


def _refuse_if_last_administrator(user: User, what: str) -> None:
    # Two demotions at once must not both see the other administrator left: each
    # first locks every administrator's row, then counts afresh (under READ
    # COMMITTED a new statement sees what the other committed while it waited).
    list(User.objects.select_for_update().filter(pk__in=active_administrators().values("pk")))
    if (
        assigned_role(user) == ADMINISTRATOR
        and user.is_active
        and not active_administrators().exclude(pk=user.pk).exists()
    ):
        raise Refused(
            f"{user.get_username()} is the last active administrator and cannot be {what}. "
            "Make someone else an administrator first."
        )


def _apply_role(user: User, role: str) -> None:
    user.groups.remove(*Group.objects.filter(name__in=ROLE_GROUPS.values()))
    if role in ROLE_GROUPS:
        user.groups.add(Group.objects.get(name=ROLE_GROUPS[role]))
    if role != ADMINISTRATOR and user.is_superuser:
        # A superuser is an administrator whatever its groups: demoting one drops that too.
        user.is_superuser = user.is_staff = False
        user.save(update_fields=["is_superuser", "is_staff"])
    # Django caches permissions on the object; the next check must see the new role.
    for cache in ("_perm_cache", "_user_perm_cache", "_group_perm_cache"):
        user.__dict__.pop(cache, None)


@transaction.atomic
def create_person(actor: audit.Actor, username: str, email: str, role: str, password: str | None = None) -> User:
    """Without a password the account cannot sign in with one until its owner
    sets it from a reset link (`password_reset_path`), or signs in through
    single sign-on."""
    if User.objects.filter(username__iexact=username).exists():
        raise Refused(f"There is already a user named {username}.")
    user = User.objects.create_user(username=username, email=email, password=password)
    if password is None:
        user.set_unusable_password()
        user.save(update_fields=["password"])
    _apply_role(user, role)
    audit.record(
        actor,
        "person.create",
        user,
        {"username": username, "email": email, "role": role, "password_set": password is not None},
    )
    return user


@transaction.atomic
def set_role(actor: audit.Actor, user: User, role: str) -> bool:
    """Returns whether anything changed (signing in through single sign-on
    sets the role on every visit, and only a change is recorded)."""
    before = assigned_role(user)
    if before == role:
        return False
    if before == ADMINISTRATOR:
        _refuse_if_last_administrator(user, "demoted")
    _apply_role(user, role)
    audit.record(actor, "person.role", user, {"role": [before, role]})
    return True


@transaction.atomic
def set_email(actor: audit.Actor, user: User, email: str) -> None:
    if user.email == email:
        return
    audit.record(actor, "person.email", user, {"email": [user.email, email]})
    user.email = email
    user.save(update_fields=["email"])


@transaction.atomic
def deactivate(actor: audit.Actor, user: User) -> None:
    """A deactivated person's sessions stop at their next request (Django
    checks is_active on every one), and their API tokens are refused
    (catalog/api/tokens.py)."""
    if not user.is_active:
        raise Refused(f"{user.get_username()} is already deactivated.")
    if audit.user_of(actor) == user:
        raise Refused("You cannot deactivate yourself; ask another administrator.")
    _refuse_if_last_administrator(user, "deactivated")
    user.is_active = False
    user.save(update_fields=["is_active"])
    audit.record(actor, "person.deactivate", user, {"username": user.get_username()})


@transaction.atomic
def reactivate(actor: audit.Actor, user: User) -> None:
    if user.is_active:
        raise Refused(f"{user.get_username()} is already active.")
    user.is_active = True
    user.save(update_fields=["is_active"])
    audit.record(actor, "person.reactivate", user, {"username": user.get_username()})


def link_lifetime_days() -> int:
    """How long a set-password link works, in whole days, as pages and e-mails say it."""
    return max(1, settings.PASSWORD_RESET_TIMEOUT // 86400)


@transaction.atomic
def password_reset_path(actor: audit.Actor, user: User, invitation: bool = False) -> str:
    """A one-use link that lets `user` choose a new password. It stops working
    once used, once the password changes, once they sign in, or after
    PASSWORD_RESET_TIMEOUT (Django's token covers all four)."""
    if not user.is_active:
        raise Refused(f"{user.get_username()} is deactivated: reactivate them before sending a reset.")
    action = "person.invite" if invitation else "person.password_reset"
    audit.record(actor, action, user, {"username": user.get_username()})
    uid = urlsafe_base64_encode(force_bytes(user.pk))
    return f"/login/reset/{uid}/{default_token_generator.make_token(user)}/"
