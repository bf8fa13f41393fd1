from django.apps import AppConfig


class CatalogConfig(AppConfig):
    name = "catalog"
    verbose_name = "Backup catalog"

    def ready(self):
        from django.db.models.signals import post_migrate

        from catalog.schedules import ensure_system_schedules

        post_migrate.connect(ensure_system_schedules, sender=self)

        from axes.signals import user_locked_out

        from catalog.lockouts import record_lockout

        user_locked_out.connect(record_lockout, dispatch_uid="catalog.record_lockout")
