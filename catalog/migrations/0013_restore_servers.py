import django.utils.timezone
from django.db import migrations, models


class Migration(migrations.Migration):
    """Registered restore servers, replacing the one RESTORE_SERVER_URL."""

    dependencies = [
        ("catalog", "0012_backup_roles_and_globals"),
    ]

    operations = [
        migrations.CreateModel(
            name="RestoreServer",
            fields=[
                ("id", models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name="ID")),
                ("secret_token", models.TextField(blank=True, editable=False)),
                ("name", models.CharField(max_length=100, unique=True)),
                ("host", models.CharField(max_length=255)),
                ("port", models.PositiveIntegerField(default=5432)),
                ("user", models.CharField(help_text="The role Strongroom connects as; it must be able to create "
                                                    "databases (CREATEDB).", max_length=255)),
                ("sslmode", models.CharField(blank=True, max_length=20, verbose_name="SSL mode")),
                ("server_version", models.CharField(blank=True, max_length=100)),
                ("checked_at", models.DateTimeField(blank=True, null=True, verbose_name="last checked")),
                ("created_at", models.DateTimeField(default=django.utils.timezone.now)),
            ],
            options={
                "ordering": ["name"],
            },
        ),
    ]
