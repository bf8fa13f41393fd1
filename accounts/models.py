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
