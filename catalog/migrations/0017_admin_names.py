# The admin's names: "Copies" (not "Copys") and "API tokens" (not "Api tokens").

from django.db import migrations


class Migration(migrations.Migration):

    dependencies = [
        ("catalog", "0016_bounded_numbers_and_retention_alert"),
    ]

    operations = [
        migrations.AlterModelOptions(
            name="apitoken",
            options={"ordering": ["-created_at"], "verbose_name": "API token"},
        ),
        migrations.AlterModelOptions(
            name="copy",
            options={"ordering": ["destination__name"], "verbose_name_plural": "copies"},
        ),
    ]
