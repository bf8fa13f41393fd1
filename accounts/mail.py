"""E-mails to people about their own account: an invitation or a password
reset link. Sending is best effort: the page always shows the link as well,
so an unreachable mail server never leaves someone without a way in."""

import logging
import smtplib

from django.conf import settings
from django.contrib.auth.models import User
from django.core.mail import send_mail

from accounts import people

log = logging.getLogger(__name__)

INVITATION = (
    "You have been given an account on {site}, with the user name {username}.\n\n"
    "Choose your password here (the link works once, for {days} days):\n{url}\n"
)
RESET = (
    "An administrator of {site} sent you a link to choose a new password for {username}.\n\n"
    "It works once, for {days} days:\n{url}\n\nIf you did not expect this, tell your administrator.\n"
)


def send_set_password_link(user: User, url: str, invitation: bool) -> str:
    """Returns "" when sent, or why not, in words (never the link)."""
    if not user.email:
        return "they have no e-mail address"
    template = INVITATION if invitation else RESET
    body = template.format(
        site=settings.SITE_NAME,
        username=user.get_username(),
        url=url,
        days=people.link_lifetime_days(),
    )
    subject = f"Your {settings.SITE_NAME} account" if invitation else f"Your {settings.SITE_NAME} password"
    try:
        send_mail(subject, body, None, [user.email])
    except (OSError, smtplib.SMTPException) as exc:
        log.warning("Could not e-mail %s a set-password link: %s", user.get_username(), exc)
        return f"the mail server refused or could not be reached ({type(exc).__name__})"
    return ""
