"""Sign-in lockouts (django-axes) go into the audit trail."""

from django.conf import settings

from catalog import audit


def record_lockout(sender, request=None, username=None, ip_address=None, **kwargs):
    # Nobody is signed in: the actor is the user name that was tried, as typed
    # (a name, never the password); the address comes from AuditRequestIP.
    # Axes sends this at the lockout and again for each attempt refused by it.
    audit.record((username or "?")[:150], "auth.lockout",
                 changes={"username": username or "", "failure_limit": settings.AXES_FAILURE_LIMIT})
