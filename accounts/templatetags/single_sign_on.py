"""What the sign-in page offers: `{% single_sign_on as sso %}` gives whether
single sign-on is on (sso.enabled), the provider's name for its button
(sso.provider_name) and whether the password form is kept for the
break-glass users alone (sso.break_glass_only)."""

from dataclasses import dataclass

from django import template
from django.conf import settings

from accounts import oidc

register = template.Library()


@dataclass(frozen=True)
class SignInChoices:
    enabled: bool
    provider_name: str
    break_glass_only: bool


@register.simple_tag
def single_sign_on() -> SignInChoices:
    return SignInChoices(
        enabled=oidc.enabled(),
        provider_name=settings.OIDC_PROVIDER_NAME,
        break_glass_only=settings.PASSWORD_SIGN_IN == oidc.BREAK_GLASS_ONLY,
    )
