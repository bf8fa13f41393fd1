from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [
        ("catalog", "0021_key_sealed_key"),
    ]

    operations = [
        migrations.AddField(
            model_name="destination",
            name="host",
            field=models.CharField(blank=True, max_length=64),
        ),
    ]
