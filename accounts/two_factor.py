"""Two-factor sign-in: a code from an authenticator app (TOTP, django-otp's
TOTPDevice), a security key or passkey (WebAuthn: accounts/security_keys.py,
a SecurityKey each), or one of ten recovery codes (a StaticDevice), after the
password. A user has two-factor when they have an authenticator or a key, or
both; the recovery codes come with the first of them and go with the last.

Signing in is two steps. The password step authenticates as before (django-
axes counts the failures); a user with two-factor is not signed in yet: the
session holds a pending sign-in for PENDING_SECONDS, and only a right code or
a key's valid answer calls `django.contrib.auth.login`. A wrong code or a
refused key answer is a failed sign-in for axes (the `user_login_failed`
signal), so they and wrong passwords share one count and one lockout; a
locked-out user's code or answer is not even checked. django-otp refuses a
code it has accepted before (TOTPDevice.last_t) and deletes a recovery code
once used.

Secrets stay where they must be: the authenticator's key on the set-up page
(until confirmed, only in the session), the recovery codes on the page that
makes them, once. No code reaches an audit event or a log line, nor a key's
credential or a challenge."""

import math
import re
import time
from base64 import b32encode
from binascii import unhexlify
from dataclasses import dataclass
from typing import Any

import segno
from axes.handlers.proxy import AxesProxyHandler
from django.conf import settings
from django.contrib import auth
from django.contrib.auth.base_user import AbstractBaseUser
from django.contrib.auth.models import AnonymousUser, User
from django.contrib.auth.signals import user_login_failed
from django.db import transaction
from django.http import HttpRequest
from django.utils import timezone
from django_otp.models import Device
from django_otp.oath import TOTP
from django_otp.plugins.otp_static.models import StaticDevice, StaticToken
from django_otp.plugins.otp_totp.models import TOTPDevice
from django_otp.util import random_hex

from accounts import security_keys
from accounts.models import SecurityKey, SignInPolicy
from catalog import audit
from catalog.errors import Refused
from catalog.roles import role_of

# Session keys. A pending sign-in: the password was right, the code is awaited.
PENDING_KEY = "accounts.pending_sign_in"
# The authenticator key being set up, until a code confirms it.
ENROLMENT_KEY = "accounts.two_factor_key"
# How the session was signed in: "password" here, "sso" by single sign-on
# (accounts/oidc.py), whose identity provider applies its own factors.
SIGNED_IN_WITH = "accounts.signed_in_with"
SSO = "sso"
PASSWORD = "password"

# Long enough to unlock a phone and open the app, short enough that a
# password typed on a shared machine and walked away from does not stay usable.
PENDING_SECONDS = 5 * 60
RECOVERY_CODE_COUNT = 10
# How the second factor was given, as the sign-in's audit event says it.
TOTP_CODE = "totp"
RECOVERY_CODE = "recovery code"
SECURITY_KEY = "security key"

AUTHENTICATOR_NAME = "Authenticator app"
RECOVERY_NAME = "Recovery codes"

AnyUser = AbstractBaseUser | AnonymousUser


# --- who has what ---------------------------------------------------------------


def authenticator(user: AnyUser) -> TOTPDevice | None:
    if not isinstance(user, User):
        return None
    return TOTPDevice.objects.filter(user=user, confirmed=True).first()


def has_two_factor(user: AnyUser) -> bool:
    """For the sign-in, the policy and the people page: the user has a
    confirmed authenticator or a security key."""
    return isinstance(user, User) and (
        TOTPDevice.objects.filter(user=user, confirmed=True).exists() or SecurityKey.objects.filter(user=user).exists()
    )


def users_with_two_factor() -> set[int]:
    """The ids of everyone with a confirmed authenticator or a security key, for the people list."""
    with_app = TOTPDevice.objects.filter(confirmed=True).values_list("user_id", flat=True)
    return set(with_app.union(SecurityKey.objects.values_list("user_id", flat=True)))


def has_security_key(user: User) -> bool:
    return SecurityKey.objects.filter(user=user).exists()


def recovery_codes_left(user: User) -> int:
    return StaticToken.objects.filter(device__user=user, device__confirmed=True).count()


def required_for(user: AnyUser) -> bool:
    """The policy asks this user to have two-factor (administrators, when it is on)."""
    return (
        isinstance(user, User)
        and role_of(user) == "administrator"
        and SignInPolicy.current().require_two_factor_for_administrators
    )


def needs_enrolment(user: AnyUser, request: HttpRequest) -> bool:
    """An administrator signed in with a password while the policy requires
    two-factor, without an authenticator yet: they may open the set-up page
    and nothing else (accounts/middleware.py). Single sign-on is exempt: the
    identity provider's own factors apply there."""
    if not user.is_authenticated or request.session.get(SIGNED_IN_WITH) == SSO:
        return False
    return required_for(user) and not has_two_factor(user)


# --- signing in -----------------------------------------------------------------


@dataclass(frozen=True)
class PendingSignIn:
    user: User
    backend: str
    next_url: str
    started_at: float


def start_pending_sign_in(request: HttpRequest, user: User, next_url: str) -> None:
    """The password was right and the user has an authenticator: remember who,
    for PENDING_SECONDS, without signing them in. A new session key, as
    login() would make, so that a session id planted before cannot follow."""
    request.session.cycle_key()
    request.session[PENDING_KEY] = {
        "user_id": user.pk,
        "backend": user.backend,  # set by authenticate()
        "next": next_url,
        "at": timezone.now().timestamp(),
    }


def pending_sign_in(request: HttpRequest) -> PendingSignIn | None:
    """The pending sign-in, or None when there is none, it is older than
    PENDING_SECONDS (it is then forgotten), or its user was deactivated since."""
    data = request.session.get(PENDING_KEY)
    if not data:
        return None
    age = timezone.now().timestamp() - data["at"]
    user = User.objects.filter(pk=data["user_id"], is_active=True).first()
    if not 0 <= age < PENDING_SECONDS or user is None:
        forget_pending_sign_in(request)
        return None
    return PendingSignIn(user=user, backend=data["backend"], next_url=data["next"], started_at=data["at"])


def forget_pending_sign_in(request: HttpRequest) -> None:
    request.session.pop(PENDING_KEY, None)


def sign_in_key_options(request: HttpRequest, pending: PendingSignIn) -> str:
    """The options for signing in with a key (the JSON for
    navigator.credentials.get()), their challenge bound to this pending sign-in.
    Refused for a locked-out user: their answer would not be checked anyway."""
    if not AxesProxyHandler.is_allowed(request, axes_credentials(pending.user)):
        raise Refused(f"Too many failed sign-in attempts: try again in {cool_off_minutes()} minutes.")
    if not has_security_key(pending.user):
        raise Refused("No security key is registered to your account: type a code.")
    return security_keys.assertion_options(request, pending.user, security_keys.SIGN_IN, bound_to=pending.started_at)


def cool_off_minutes() -> str:
    return f"{settings.AXES_COOLOFF_TIME.total_seconds() / 60:.0f}"


@transaction.atomic
def complete_sign_in(request: HttpRequest, user: User, backend: str, second_factor: str | None) -> None:
    """Signs the user in (a new session key; axes clears their failed
    attempts) and records how."""
    auth.login(request, user, backend=backend)
    forget_pending_sign_in(request)
    request.session[SIGNED_IN_WITH] = PASSWORD
    audit.record(user, "auth.sign_in", user, {"second_factor": second_factor})


def axes_credentials(user: User) -> dict[str, str]:
    # As the sign-in form's field is named, so that axes counts the same name.
    return {"username": user.get_username()}


def locked_out(request: HttpRequest, user: User) -> bool:
    """Axes has locked this user name at this address (wrong passwords and
    wrong codes alike): no code is checked until the cool-off has passed.
    Marks the request as axes's own backend does, so that AxesMiddleware
    answers with the lockout page."""
    if AxesProxyHandler.is_allowed(request, axes_credentials(user)):
        return False
    request.axes_locked_out = True  # type: ignore[attr-defined]
    request.axes_credentials = axes_credentials(user)  # type: ignore[attr-defined]
    return True


@dataclass(frozen=True)
class CodeCheck:
    """What became of a code: accepted as `method` (TOTP_CODE or
    RECOVERY_CODE), or refused; `wait_seconds` when it was not even checked
    because django-otp slows down guessing after wrong codes."""

    method: str | None = None
    wait_seconds: int = 0
    recovery_codes_left: int | None = None


def normalize_code(code: str) -> str:
    """People copy codes with spaces or dashes, and recovery codes in capitals."""
    return re.sub(r"[\s-]", "", code).lower()


def is_authenticator_code(code: str) -> bool:
    return re.fullmatch(r"\d{6}", code) is not None


def throttled_for(device: Device) -> int:
    """Seconds until `device` checks a code again (0: now). django-otp waits
    1, 2, 4, … seconds after consecutive wrong codes, across every address,
    where axes counts per user name and address."""
    allowed, data = device.verify_is_allowed()
    if allowed:
        return 0
    until = (data or {}).get("locked_until")
    return max(1, math.ceil((until - timezone.now()).total_seconds())) if until else 1


@transaction.atomic
def check_code(request: HttpRequest, user: User, code: str) -> CodeCheck:
    """A six-digit code is checked against the authenticator (never one it
    accepted before), anything else against the recovery codes (each works
    once). A wrong code is a failed sign-in for axes; one not checked because
    of django-otp's slow-down is not, so that it costs a hurried user nothing."""
    code = normalize_code(code)
    check = _check_code(user, code)
    if check.method is None and not check.wait_seconds:
        user_login_failed.send(sender=__name__, credentials=axes_credentials(user), request=request)
    if check.method == RECOVERY_CODE:
        audit.record(user, "two_factor.recovery_code_used", user, {"recovery_codes_left": check.recovery_codes_left})
    return check


def _check_code(user: User, code: str) -> CodeCheck:
    # Locked rows: two requests with the same code cannot both see it unused.
    device: Device | None
    if is_authenticator_code(code):
        device = TOTPDevice.objects.select_for_update().filter(user=user, confirmed=True).first()
    else:
        device = StaticDevice.objects.select_for_update().filter(user=user, confirmed=True).first()
    if device is None or not code:
        return CodeCheck()
    wait = throttled_for(device)
    if wait:
        return CodeCheck(wait_seconds=wait)
    if not device.verify_token(code):
        return CodeCheck()
    if isinstance(device, StaticDevice):
        return CodeCheck(method=RECOVERY_CODE, recovery_codes_left=device.token_set.count())
    return CodeCheck(method=TOTP_CODE)


@transaction.atomic
def check_key(
    request: HttpRequest, user: User, answer: str, purpose: str = security_keys.SIGN_IN, bound_to: float | None = None
) -> CodeCheck:
    """A security key's answer to the challenge made for `purpose` (and, at
    sign-in, for the pending sign-in `bound_to`). Refused, it is a failed
    sign-in for axes, as a wrong code is."""
    key = security_keys.verify_assertion(request, user, purpose, answer, bound_to)
    if key is None:
        user_login_failed.send(sender=__name__, credentials=axes_credentials(user), request=request)
        return CodeCheck()
    return CodeCheck(method=SECURITY_KEY)


# --- setting up, changing, turning off ------------------------------------------


def enrolment_key(request: HttpRequest) -> str:
    """The authenticator key being set up (hex), made on first sight and kept
    in the session until a code confirms it, so that opening the page writes
    nothing to the database and reloading it does not change the QR code."""
    key = request.session.get(ENROLMENT_KEY)
    if not key:
        key = request.session[ENROLMENT_KEY] = random_hex(20)
    return str(key)


def unsaved_authenticator(user: User, key: str) -> TOTPDevice:
    return TOTPDevice(user=user, key=key, name=AUTHENTICATOR_NAME, confirmed=False)


def provisioning_uri(user: User, key: str) -> str:
    """The otpauth:// URI an authenticator app reads from the QR code (issuer:
    OTP_TOTP_ISSUER, the site's name)."""
    return str(unsaved_authenticator(user, key).config_url)


def qr_svg(uri: str) -> str:
    """The QR code as inline SVG markup: the CSP allows neither inline scripts
    nor data: images, and an <svg> in the page needs neither."""
    return str(segno.make(uri, error="m").svg_inline(scale=5, border=4, dark="#000", light="#fff"))


def key_for_typing(key: str) -> str:
    """The key as authenticator apps take it by hand: base32, in groups of four."""
    text = b32encode(unhexlify(key)).decode().rstrip("=")
    return " ".join(text[i : i + 4] for i in range(0, len(text), 4))


def _authenticator_code_ok(key: str, code: str) -> int | None:
    """The time step at which `code` is right for `key` (one step either side
    allowed), or None."""
    if not is_authenticator_code(code):
        return None
    totp = TOTP(unhexlify(key), step=30, t0=0, digits=6, drift=0)
    totp.time = time.time()
    return totp.t() if totp.verify(int(code), tolerance=1) else None


def _new_recovery_codes(user: User) -> list[str]:
    StaticDevice.objects.filter(user=user).delete()
    device = StaticDevice.objects.create(user=user, name=RECOVERY_NAME, confirmed=True)
    codes = [StaticToken.random_token() for _ in range(RECOVERY_CODE_COUNT)]
    StaticToken.objects.bulk_create([StaticToken(device=device, token=code) for code in codes])
    return codes


def _lock_user(user: User) -> None:
    # Two tabs confirming at once must not leave two authenticators.
    User.objects.select_for_update().filter(pk=user.pk).first()


@transaction.atomic
def enrol(request: HttpRequest, user: User, code: str) -> list[str]:
    """Confirms the key of the set-up page with a code from the app and keeps
    it as the user's authenticator. Returns ten new recovery codes, to show
    once, when it is their first second factor; beside security keys, the
    recovery codes they have stay (an empty list). The code that confirmed it
    cannot sign in afterwards."""
    _lock_user(user)
    if authenticator(user) is not None:
        raise Refused("An authenticator app is already set up for your account.")
    key: str | None = request.session.get(ENROLMENT_KEY)
    step = _authenticator_code_ok(key, normalize_code(code)) if key else None
    if key is None or step is None:
        raise Refused("That code does not match. Check the time on your phone, then type the code the app shows now.")
    TOTPDevice.objects.filter(user=user).delete()
    device = unsaved_authenticator(user, key)
    device.confirmed = True
    device.last_t = step
    first = not has_security_key(user)
    device.save()
    del request.session[ENROLMENT_KEY]
    if not first:
        audit.record(user, "two_factor.enrol", user, {"recovery_codes_kept": recovery_codes_left(user)})
        return []
    codes = _new_recovery_codes(user)
    audit.record(user, "two_factor.enrol", user, {"recovery_codes": RECOVERY_CODE_COUNT})
    return codes


def wait_message(seconds: int) -> str:
    return f"Too many wrong codes in a row: wait {seconds} second{'' if seconds == 1 else 's'}, then try again."


def confirm_options(request: HttpRequest, user: User) -> str:
    """The options for confirming a change with one of the user's keys (the
    JSON for navigator.credentials.get()), its challenge kept in the session."""
    if not has_security_key(user):
        raise Refused("You have no security key to confirm with: type a code.")
    return security_keys.assertion_options(request, user, security_keys.CONFIRM)


def _require_current_factor(request: HttpRequest, user: User, code: str, key_answer: str = "") -> str:
    """A code from the app, a recovery code or a security key's answer to a
    confirming challenge (confirm_options), as at sign-in and counted by axes
    the same way, before anything about two-factor changes: a session left
    open is not enough to turn it off. Checked in its own transaction, so
    that a refusal does not undo the count."""
    locked = f"Too many wrong codes: try again in {cool_off_minutes()} minutes."
    if not AxesProxyHandler.is_allowed(request, axes_credentials(user)):
        raise Refused(locked)
    if key_answer:
        check = check_key(request, user, key_answer, security_keys.CONFIRM)
    else:
        check = check_code(request, user, code)
    # This page says so itself: axes's lockout page is about signing in.
    just_locked = getattr(request, "axes_locked_out", False)
    request.axes_locked_out = False  # type: ignore[attr-defined]
    if check.method:
        return check.method
    if just_locked:
        raise Refused(locked)
    if check.wait_seconds:
        raise Refused(wait_message(check.wait_seconds))
    if key_answer:
        raise Refused("Your security key's answer was not accepted: try again, or type a code.")
    raise Refused("That code is not right.")


def regenerate_recovery_codes(request: HttpRequest, user: User, code: str, key_answer: str = "") -> list[str]:
    """Ten new recovery codes replace the old ones (all of them, used or not)."""
    if not has_two_factor(user):
        raise Refused("Two-factor is off for your account: set it up first.")
    method = _require_current_factor(request, user, code, key_answer)
    with transaction.atomic():
        codes = _new_recovery_codes(user)
        audit.record(
            user, "two_factor.recovery_codes", user, {"recovery_codes": RECOVERY_CODE_COUNT, "confirmed_with": method}
        )
    return codes


def disable(request: HttpRequest, user: User, code: str, key_answer: str = "") -> None:
    """Turns two-factor off for oneself (the authenticator, every security key
    and the recovery codes); not for an administrator while the policy
    requires it (another administrator can reset it instead)."""
    if not has_two_factor(user):
        raise Refused("Two-factor is already off for your account.")
    if required_for(user):
        raise Refused(
            "Two-factor is required for administrators, so you cannot turn it off. "
            "To move to a new phone, ask another administrator to reset yours, then set it up again."
        )
    method = _require_current_factor(request, user, code, key_answer)
    with transaction.atomic():
        keys = _delete_devices(user)
        changes: dict[str, Any] = {"confirmed_with": method}
        if keys:
            changes["security_keys_removed"] = keys
        audit.record(user, "two_factor.disable", user, changes)


def _delete_devices(user: User) -> int:
    """Removes every second factor of the user; returns how many security keys were among them."""
    TOTPDevice.objects.filter(user=user).delete()
    StaticDevice.objects.filter(user=user).delete()
    keys, _ = SecurityKey.objects.filter(user=user).delete()
    return keys


# --- security keys --------------------------------------------------------------


def key_options(request: HttpRequest, user: User) -> str:
    """The options for adding a key (the JSON for navigator.credentials.create()),
    its challenge kept in the session until the key answers."""
    return security_keys.registration_options(request, user)


KEY_NAME_LENGTH = SecurityKey._meta.get_field("name").max_length or 64


@transaction.atomic
def add_key(request: HttpRequest, user: User, name: str, answer: str) -> list[str]:
    """Keeps the key that answered the challenge of key_options under `name`.
    Returns ten new recovery codes, to show once, when it is the user's first
    second factor; beside an authenticator or other keys, an empty list."""
    name = " ".join(name.split())
    if not name:
        raise Refused("Give the key a name, so that you can tell it from your others.")
    if len(name) > KEY_NAME_LENGTH:
        raise Refused(f"A key's name is at most {KEY_NAME_LENGTH} characters.")
    _lock_user(user)
    new = security_keys.verify_new_key(request, user, answer)
    if SecurityKey.objects.filter(credential_id=new.credential_id).exists():
        raise Refused("That key is already registered.")
    first = not has_two_factor(user)
    key = SecurityKey.objects.create(
        user=user,
        name=name,
        credential_id=new.credential_id,
        public_key=new.public_key,
        sign_count=new.sign_count,
        transports=new.transports,
    )
    codes = _new_recovery_codes(user) if first else []
    changes: dict[str, Any] = {"name": key.name, "transports": key.transports}
    if first:
        changes["recovery_codes"] = RECOVERY_CODE_COUNT
    audit.record(user, "two_factor.key_added", user, changes)
    return codes


def remove_key(request: HttpRequest, user: User, key_id: int, code: str, key_answer: str = "") -> SecurityKey:
    """Removes one of the user's own keys, confirmed with a current second
    factor (the key itself will do). Removing the last second factor turns
    two-factor off, recovery codes included; an administrator whom the policy
    requires to use it must set up another first."""
    key = SecurityKey.objects.filter(user=user, pk=key_id).first()
    if key is None:
        raise Refused("That key is not registered to your account (any more).")
    last = authenticator(user) is None and not SecurityKey.objects.filter(user=user).exclude(pk=key.pk).exists()
    if last and required_for(user):
        raise Refused(
            "Two-factor is required for administrators, and this is your only second factor: "
            "add another key or an authenticator app before you remove it."
        )
    method = _require_current_factor(request, user, code, key_answer)
    with transaction.atomic():
        SecurityKey.objects.filter(pk=key.pk).delete()
        changes: dict[str, Any] = {"name": key.name, "confirmed_with": method}
        if not has_two_factor(user):
            StaticDevice.objects.filter(user=user).delete()
            changes["two_factor"] = "off"
        audit.record(user, "two_factor.key_removed", user, changes)
    return key


@transaction.atomic
def reset_two_factor(actor: audit.Actor, user: User) -> None:
    """Another administrator removes a user's authenticator and recovery codes
    (a lost phone): the user signs in with a password alone until they set
    it up again, which the policy may then ask of them at once."""
    if audit.user_of(actor) == user:
        raise Refused("You cannot reset your own two-factor; turn it off on your Two-factor page instead.")
    if not has_two_factor(user) and not StaticDevice.objects.filter(user=user).exists():
        raise Refused(f"{user.get_username()} has no two-factor to reset.")
    keys = _delete_devices(user)
    changes: dict[str, Any] = {"username": user.get_username()}
    if keys:
        changes["security_keys_removed"] = keys
    audit.record(actor, "two_factor.reset", user, changes)


@transaction.atomic
def set_two_factor_required(actor: audit.Actor, required: bool) -> bool:
    """Whether administrators must use two-factor. Returns whether anything
    changed (only a change is recorded)."""
    policy = SignInPolicy.objects.select_for_update().get(pk=SignInPolicy.current().pk)
    before = policy.require_two_factor_for_administrators
    if before == required:
        return False
    policy.require_two_factor_for_administrators = required
    policy.save(update_fields=["require_two_factor_for_administrators", "changed_at"])
    audit.record(actor, "sign_in_policy.change", policy, {"require_two_factor_for_administrators": [before, required]})
    return True


def status(user: User) -> dict[str, Any]:
    """What the Two-factor page says about the user's own account."""
    device = authenticator(user)
    keys = list(SecurityKey.objects.filter(user=user))
    enabled = device is not None or bool(keys)
    return {
        "enabled": enabled,
        "authenticator": device is not None,
        "since": device.created_at if device else None,
        "last_used": device.last_used_at if device else None,
        "keys": keys,
        "recovery_codes_left": recovery_codes_left(user) if enabled else 0,
        "required": required_for(user),
        # The one key an administrator under the policy has: not removed before another factor is added.
        "last_key_kept": device is None and len(keys) == 1 and required_for(user),
    }
