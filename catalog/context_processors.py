from collections.abc import Callable
from functools import cache
from typing import Any

from django.conf import settings
from django.contrib.auth.models import AnonymousUser, User
from django.http import HttpRequest

from catalog import keyring
from catalog.models import Key
from catalog.roles import role_of


def branding(request: HttpRequest) -> dict[str, Any]:
    user = getattr(request, "user", None)
    can_operate = bool(user and user.is_authenticated and user.has_perm("catalog.operate"))
    return {
        "site_name": settings.SITE_NAME,
        "can_operate": can_operate,
        "time_zone": settings.TIME_ZONE,
        "unsaved_master_key": unsaved_master_key(user),
        # Where that key's only copy is: the metadata database, or this machine's key directory.
        "keys_in_database": keyring.key_sealer() is not None,
        "role": role_of(user),
    }


def unsaved_master_key(user: User | AnonymousUser | None) -> Callable[[], Key | None]:
    """For base.html's banner: the active master key while its file on this
    machine is its only copy. A callable, so that the query runs only when a
    full page asks (not for every htmx partial), and once per request."""

    @cache
    def active_key_without_a_copy() -> Key | None:
        if not (user and user.is_authenticated and user.has_perm("catalog.view_backup")):
            return None
        from catalog.keys import key_without_a_copy

        return key_without_a_copy()

    return active_key_without_a_copy
