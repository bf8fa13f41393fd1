from django.apps import AppConfig


class RestoreConfig(AppConfig):
    name = "restore"
    verbose_name = "Restores"

    def ready(self) -> None:
        # The catalog below never imports this app: it calls what is registered (catalog/registry.py).
        from catalog import registry
        from restore import openapi, services
        from restore.models import RestoreJob

        registry.tick_steps["swept_restores"] = services.sweep_stale_restores
        registry.queued_jobs["restore"] = RestoreJob
        registry.api_paths.update(openapi.PATHS)
        registry.api_schemas.update(openapi.SCHEMAS)
