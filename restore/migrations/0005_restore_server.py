import django.db.models.deletion
from django.db import migrations, models


class Migration(migrations.Migration):
    """A restore's other server is a registered catalog.RestoreServer instead
    of the one RESTORE_SERVER_URL (removed with this change).

    Existing rows are not converted: "source" rows mean what null means now,
    and "other" rows went to a server that has no record to point to (the
    URL was never stored). They are left with null, which now reads "the
    source's server"; the truth stays in the audit trail, whose restore.queue
    event for each of them says "on the restore server"."""

    dependencies = [
        ("catalog", "0013_restore_servers"),
        ("restore", "0004_create_missing_roles"),
    ]

    operations = [
        migrations.RemoveField(
            model_name="restorejob",
            name="server",
        ),
        migrations.AddField(
            model_name="restorejob",
            name="restore_server",
            field=models.ForeignKey(blank=True, null=True, on_delete=django.db.models.deletion.PROTECT,
                                    related_name="restores", to="catalog.restoreserver"),
        ),
    ]
