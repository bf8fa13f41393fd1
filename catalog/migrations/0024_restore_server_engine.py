# A restore server is PostgreSQL (as every one registered before) or MariaDB/MySQL.
from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [
        ("catalog", "0023_more_engines_storage_and_channels"),
    ]

    operations = [
        migrations.AddField(
            model_name="restoreserver",
            name="engine",
            field=models.CharField(
                choices=[("postgresql", "PostgreSQL"), ("mariadb", "MariaDB or MySQL")],
                default="postgresql",
                help_text="It takes backups of sources of this engine.",
                max_length=20,
            ),
        ),
    ]
