"""The two roles: Administrators do everything, Auditors only look.

Takes the Group and Permission models as arguments so the data migration can
pass its historical models and everything else the real ones."""

from django.contrib.auth.models import AnonymousUser, User
from django.contrib.auth.models import Group as GroupModel
from django.contrib.auth.models import Permission as PermissionModel

ADMINISTRATORS = "Administrators"
AUDITORS = "Auditors"

# Audit events are append-only, even for administrators.
NEVER_GRANTED = ["change_auditevent", "delete_auditevent"]


def grant_roles(Group: type[GroupModel], Permission: type[PermissionModel]) -> None:
    catalog_perms = Permission.objects.filter(content_type__app_label="catalog")
    administrators, _ = Group.objects.get_or_create(name=ADMINISTRATORS)
    administrators.permissions.set(catalog_perms.exclude(codename__in=NEVER_GRANTED))
    auditors, _ = Group.objects.get_or_create(name=AUDITORS)
    auditors.permissions.set(catalog_perms.filter(codename__startswith="view_"))


def role_of(user: User | AnonymousUser | None) -> str | None:
    """ "administrator", "auditor", or None for a signed-in user in neither
    group (who may see no page) and for anonymous visitors. By permission, so
    a superuser is an administrator."""
    if not (user and user.is_authenticated):
        return None
    if user.has_perm("catalog.operate"):
        return "administrator"
    if user.has_perm("catalog.view_backup"):
        return "auditor"
    return None
