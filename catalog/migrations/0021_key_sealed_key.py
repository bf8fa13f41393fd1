from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [
        ("catalog", "0020_worker_heartbeat"),
    ]

    operations = [
        migrations.AddField(
            model_name="key",
            name="sealed_key",
            field=models.TextField(blank=True),
        ),
    ]
