from django.conf import settings
from django.db import models


class SignInPolicy(models.Model):
    """The site's sign-in rules that administrators set in the browser. One
    row (pk 1), made on first read."""

    require_two_factor_for_administrators = models.BooleanField(
        default=False,
        help_text="Administrators without a second factor must set one up before they can open any page.",
    )
    changed_at = models.DateTimeField(auto_now=True)

    def __str__(self) -> str:
        return "sign-in policy"

    @classmethod
    def current(cls) -> "SignInPolicy":
        policy, _ = cls.objects.get_or_create(pk=1)
        return policy


class SingleSignOnIdentity(models.Model):
    """Who a person is at the organisation's identity provider: the issuer
    and the subject (`sub`) it vouches for. A later sign-in is matched on
    these, never on an e-mail address or a user name the provider lets its
    users change."""

    user = models.ForeignKey(settings.AUTH_USER_MODEL, models.CASCADE, related_name="sso_identities")
    issuer = models.CharField(max_length=255)
    subject = models.CharField(max_length=255)
    created_at = models.DateTimeField(auto_now_add=True)
    last_sign_in_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["issuer", "subject"], name="one_user_per_sso_subject")]

    def __str__(self) -> str:
        return f"{self.subject} at {self.issuer}"


class SecurityKey(models.Model):
    """A security key or passkey registered as a second factor (WebAuthn,
    accounts/security_keys.py). Nothing here is secret: the authenticator
    keeps the private key; we keep its public key to check signatures and the
    count of signatures it reported last, to notice a cloned key.

    Not a django-otp Device: a Device checks a typed token (verify_token),
    where a key answers a challenge made for this request's origin."""

    user = models.ForeignKey(settings.AUTH_USER_MODEL, models.CASCADE, related_name="security_keys")
    name = models.CharField(max_length=64, help_text="What its owner calls it, such as 'YubiKey on my key ring'.")
    # base64url, as WebAuthn's JSON carries it; at most 1023 bytes long by the specification.
    credential_id = models.CharField(max_length=1400, unique=True)
    public_key = models.BinaryField(help_text="COSE-encoded, as the authenticator made it.")
    sign_count = models.PositiveBigIntegerField(default=0)
    # How the browser may reach it ("usb", "nfc", "ble", "internal", "hybrid"), handed back at sign-in.
    transports = models.JSONField(default=list, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    last_used_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["created_at", "pk"]

    def __str__(self) -> str:
        return self.name

    def sign_count_went_back(self, reported: int) -> bool:
        """WebAuthn's clone check: an authenticator that counts reports more
        each time; one that does not count reports 0 every time (passkeys
        synced between devices do)."""
        return (reported > 0 or self.sign_count > 0) and reported <= self.sign_count
