from django.apps import AppConfig


class CatalogConfig(AppConfig):
    name = "catalog"
    verbose_name = "Backup catalog"

    def ready(self) -> None:
        from django.core import checks
        from django.db.models.signals import post_migrate

        from catalog.checks import check_keys_per_host, check_private_files, check_shared_secret_key

        # Warns at start-up about a data directory, metadata database or key others can read.
        checks.register(check_private_files, checks.Tags.security)
        checks.register(check_shared_secret_key, checks.Tags.security)
        checks.register(check_keys_per_host, checks.Tags.security)

        from catalog.schedules import ensure_system_schedules, install_wall_clock_cron

        post_migrate.connect(ensure_system_schedules, sender=self)
        # django-q2 computes cron runs that repeat or spin on the night the clocks go back.
        install_wall_clock_cron()

        from axes.models import AccessAttempt
        from axes.signals import user_locked_out
        from django.db.models.signals import post_delete

        from catalog.lockouts import record_lockout, record_lockout_end

        user_locked_out.connect(record_lockout, dispatch_uid="catalog.record_lockout")
        post_delete.connect(record_lockout_end, sender=AccessAttempt, dispatch_uid="catalog.record_lockout_end")
