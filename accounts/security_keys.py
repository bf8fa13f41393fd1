"""Security keys and passkeys as a second factor: the WebAuthn ceremonies,
through py_webauthn (the `webauthn` package). Who may add, remove or sign in
with a key, and what is audited, is accounts/two_factor.py's; this module
makes the options the browser's navigator.credentials needs and checks what
it answers. static/js/webauthn.js is the browser's half.

The relying party is the site as the browser sees it: the origin is this
request's scheme and host, the RP ID the host without its port. A key
registered at one host name does not sign for another, as WebAuthn intends.

Each ceremony's challenge waits in the session for CEREMONY_SECONDS, for one
purpose (adding a key, signing in, confirming a change) and one user; a sign-
in's is bound to the pending sign-in it was made for. It is taken out of the
session when an answer comes, right or wrong, so it is never used twice.

Nothing here is secret, yet nothing of a key beyond its name reaches a log:
not its credential id, public key or a challenge (py_webauthn's reasons for a
refusal, which are logged, name origins and counts, never the challenge). A key whose signature count
goes back (a sign of a cloned key) is refused and logged as a warning."""

import logging
from dataclasses import dataclass

from django.conf import settings
from django.contrib.auth.models import User
from django.db import transaction
from django.http import HttpRequest
from django.http.request import split_domain_port
from django.utils import timezone
from django.utils.crypto import salted_hmac
from webauthn import (
    generate_authentication_options,
    generate_registration_options,
    options_to_json,
    verify_authentication_response,
    verify_registration_response,
)
from webauthn.helpers import (
    base64url_to_bytes,
    bytes_to_base64url,
    parse_authentication_credential_json,
    parse_registration_credential_json,
)
from webauthn.helpers.exceptions import WebAuthnException
from webauthn.helpers.structs import (
    AttestationConveyancePreference,
    AuthenticatorSelectionCriteria,
    AuthenticatorTransport,
    PublicKeyCredentialDescriptor,
    ResidentKeyRequirement,
    UserVerificationRequirement,
)

from accounts.models import SecurityKey
from catalog.errors import Refused

log = logging.getLogger(__name__)

CHALLENGE_KEY = "accounts.webauthn_challenge"
# As long as a pending sign-in waits (two_factor.PENDING_SECONDS): time to find the key and touch it.
CEREMONY_SECONDS = 5 * 60
# What a challenge was made for.
ADD_KEY = "add key"
SIGN_IN = "sign in"
CONFIRM = "confirm"

# What an answer that does not come from the page may hold: anything.
Malformed = (WebAuthnException, ValueError, TypeError, KeyError)


@dataclass(frozen=True)
class RelyingParty:
    id: str
    origin: str


def relying_party(request: HttpRequest) -> RelyingParty:
    # get_host() is checked against ALLOWED_HOSTS; browsers write the origin in lower case.
    host = request.get_host().lower()
    domain, _port = split_domain_port(host)
    return RelyingParty(id=domain, origin=f"{request.scheme}://{host}")


def user_handle(user: User) -> bytes:
    """What the authenticator files the credential under: the same for all of
    a user's keys, and no name or e-mail address (WebAuthn asks for none)."""
    return salted_hmac("accounts.security_keys.user_handle", str(user.pk), algorithm="sha256").digest()


def descriptor(key: SecurityKey) -> PublicKeyCredentialDescriptor:
    known = {transport.value for transport in AuthenticatorTransport}
    transports = [AuthenticatorTransport(t) for t in key.transports if t in known]
    return PublicKeyCredentialDescriptor(id=base64url_to_bytes(key.credential_id), transports=transports or None)


# --- the challenge in the session -----------------------------------------------


def remember_challenge(
    request: HttpRequest, purpose: str, user: User, challenge: bytes, bound_to: float | None = None
) -> None:
    """One ceremony at a time per session: a new one replaces the one before."""
    request.session[CHALLENGE_KEY] = {
        "purpose": purpose,
        "user_id": user.pk,
        "challenge": bytes_to_base64url(challenge),
        "bound_to": bound_to,
        "at": timezone.now().timestamp(),
    }


def take_challenge(request: HttpRequest, purpose: str, user: User, bound_to: float | None = None) -> bytes | None:
    """The challenge made for this purpose, user (and pending sign-in), taken
    out of the session; None when there is none, it is someone else's or
    another purpose's, or it waited more than CEREMONY_SECONDS."""
    data = request.session.pop(CHALLENGE_KEY, None)
    if not data:
        return None
    age = timezone.now().timestamp() - data["at"]
    if (
        data["purpose"] != purpose
        or data["user_id"] != user.pk
        or data["bound_to"] != bound_to
        or not 0 <= age < CEREMONY_SECONDS
    ):
        return None
    return base64url_to_bytes(data["challenge"])


# --- adding a key ---------------------------------------------------------------


def registration_options(request: HttpRequest, user: User) -> str:
    """The JSON for navigator.credentials.create().

    User verification is preferred, not required: a key with a PIN or a
    fingerprint uses it, a plain touch-only key still works, and the password
    was checked already. Resident (discoverable) keys are discouraged: the
    user is always known by the time a key is asked for (it is a second
    factor, listed by allowCredentials), and a hardware key has room for only
    a few dozen resident credentials, which should not be spent on us.
    Passkey providers (phones, password managers) store theirs anyway."""
    rp = relying_party(request)
    options = generate_registration_options(
        rp_id=rp.id,
        rp_name=settings.SITE_NAME,
        user_id=user_handle(user),
        user_name=user.get_username(),
        user_display_name=user.get_full_name() or user.get_username(),
        timeout=CEREMONY_SECONDS * 1000,
        attestation=AttestationConveyancePreference.NONE,  # any key will do: its make is not checked
        authenticator_selection=AuthenticatorSelectionCriteria(
            resident_key=ResidentKeyRequirement.DISCOURAGED,
            user_verification=UserVerificationRequirement.PREFERRED,
        ),
        # The browser refuses to register a key twice (InvalidStateError).
        exclude_credentials=[descriptor(key) for key in user.security_keys.all()],
    )
    remember_challenge(request, ADD_KEY, user, options.challenge)
    return str(options_to_json(options))


@dataclass(frozen=True)
class NewKey:
    credential_id: str
    public_key: bytes
    sign_count: int
    transports: list[str]


def verify_new_key(request: HttpRequest, user: User, answer: str) -> NewKey:
    """What navigator.credentials.create() answered, checked against the
    challenge in the session, this site's origin and RP ID."""
    challenge = take_challenge(request, ADD_KEY, user)
    if challenge is None:
        raise Refused("Adding the key took too long, or started in another tab: add it again.")
    rp = relying_party(request)
    try:
        credential = parse_registration_credential_json(answer)
        verified = verify_registration_response(
            credential=credential, expected_challenge=challenge, expected_rp_id=rp.id, expected_origin=rp.origin
        )
    except Malformed as error:
        log.info("A new security key of %s was refused: %s", user.get_username(), error)
        raise Refused("The key's answer could not be checked: add it again.") from None
    transports = [t.value for t in credential.response.transports or []]
    return NewKey(
        credential_id=bytes_to_base64url(verified.credential_id),
        public_key=verified.credential_public_key,
        sign_count=verified.sign_count,
        transports=transports,
    )


# --- signing with a key ---------------------------------------------------------


def assertion_options(request: HttpRequest, user: User, purpose: str, bound_to: float | None = None) -> str:
    """The JSON for navigator.credentials.get(): any of the user's keys may answer."""
    options = generate_authentication_options(
        rp_id=relying_party(request).id,
        timeout=CEREMONY_SECONDS * 1000,
        allow_credentials=[descriptor(key) for key in user.security_keys.all()],
        user_verification=UserVerificationRequirement.PREFERRED,
    )
    remember_challenge(request, purpose, user, options.challenge, bound_to)
    return str(options_to_json(options))


def verify_assertion(
    request: HttpRequest, user: User, purpose: str, answer: str, bound_to: float | None = None
) -> SecurityKey | None:
    """The user's key that signed this session's challenge for `purpose`, its
    signature count and last use saved; None when the answer is refused
    (logged, without the answer)."""
    username = user.get_username()
    challenge = take_challenge(request, purpose, user, bound_to)
    if challenge is None:
        log.info("A security key answer for %s came without a challenge of this sign-in waiting", username)
        return None
    rp = relying_party(request)
    with transaction.atomic():
        try:
            credential = parse_authentication_credential_json(answer)
        except Malformed as error:
            log.info("A security key answer for %s was refused: %s", username, error)
            return None
        # Locked: two answers signed with the same count cannot both pass the count check.
        key = SecurityKey.objects.select_for_update().filter(user=user, credential_id=credential.id).first()
        if key is None:
            log.info("A security key answer for %s came from a key that is not theirs", username)
            return None
        try:
            verified = verify_authentication_response(
                credential=credential,
                expected_challenge=challenge,
                expected_rp_id=rp.id,
                expected_origin=rp.origin,
                credential_public_key=bytes(key.public_key),
                # py_webauthn would refuse a count that went back among its other reasons;
                # it is checked below, after the signature, so that only a genuine
                # signature with an old count is reported as a possible clone.
                credential_current_sign_count=0,
            )
        except Malformed as error:
            log.info("The security key %r of %s was refused: %s", key.name, username, error)
            return None
        if key.sign_count_went_back(verified.new_sign_count):
            log.warning(
                "The security key %r of %s signed with count %d after %d: refused, as it may have been cloned. "
                "If the key was reset, remove it and add it again.",
                key.name,
                username,
                verified.new_sign_count,
                key.sign_count,
            )
            return None
        key.sign_count = verified.new_sign_count
        key.last_used_at = timezone.now()
        key.save(update_fields=["sign_count", "last_used_at"])
        return key
