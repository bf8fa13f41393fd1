# Manual backups get a retention rule of their own (issue 20): a plan keeps
# them keep_manual_days apart from its rule, or a backup until the keep_until
# asked for when it was taken. Existing plans get the default of 30 days, which
# keeps more than before and prunes nothing the old rule kept.

import django.core.validators
from django.db import migrations, models


class Migration(migrations.Migration):

    dependencies = [
        ('catalog', '0014_key_copy_held'),
    ]

    operations = [
        migrations.AddField(
            model_name='backupplan',
            name='keep_manual_days',
            field=models.PositiveIntegerField(default=30, validators=[django.core.validators.MaxValueValidator(36500)], verbose_name='keep manual backups (days)'),
        ),
        migrations.AddField(
            model_name='backup',
            name='keep_until',
            field=models.DateTimeField(blank=True, null=True),
        ),
    ]
