"""The two roles: Administrators do everything, Auditors only look.

Takes the Group and Permission models as arguments so the data migration can
pass its historical models and everything else the real ones."""

ADMINISTRATORS = "Administrators"
AUDITORS = "Auditors"

# Audit events are append-only, even for administrators.
NEVER_GRANTED = ["change_auditevent", "delete_auditevent"]


def grant_roles(Group, Permission):
    catalog_perms = Permission.objects.filter(content_type__app_label="catalog")
    administrators, _ = Group.objects.get_or_create(name=ADMINISTRATORS)
    administrators.permissions.set(catalog_perms.exclude(codename__in=NEVER_GRANTED))
    auditors, _ = Group.objects.get_or_create(name=AUDITORS)
    auditors.permissions.set(catalog_perms.filter(codename__startswith="view_"))
