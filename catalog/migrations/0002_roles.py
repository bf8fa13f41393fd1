"""The two roles: Administrators do everything, Auditors only look."""

from django.contrib.auth.management import create_permissions
from django.db import migrations

CATALOG_MODELS = ["source", "destination", "backupplan", "backup", "copy", "key", "auditevent"]


def create_roles(apps, schema_editor):
    # Permissions are normally created after all migrations; make them now.
    for app_config in apps.get_app_configs():
        app_config.models_module = True
        create_permissions(app_config, apps=apps, verbosity=0)
        app_config.models_module = None

    Group = apps.get_model("auth", "Group")
    Permission = apps.get_model("auth", "Permission")
    catalog_perms = Permission.objects.filter(content_type__app_label="catalog")

    administrators, _ = Group.objects.get_or_create(name="Administrators")
    # Audit events are append-only, even for administrators.
    administrators.permissions.set(
        catalog_perms.exclude(codename__in=["change_auditevent", "delete_auditevent"])
    )

    auditors, _ = Group.objects.get_or_create(name="Auditors")
    auditors.permissions.set(catalog_perms.filter(codename__startswith="view_"))


def remove_roles(apps, schema_editor):
    apps.get_model("auth", "Group").objects.filter(name__in=["Administrators", "Auditors"]).delete()


class Migration(migrations.Migration):
    dependencies = [
        ("catalog", "0001_initial"),
        ("auth", "0012_alter_user_first_name_max_length"),
        ("contenttypes", "0002_remove_content_type_name"),
    ]

    operations = [migrations.RunPython(create_roles, remove_roles)]
