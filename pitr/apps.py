from django.apps import AppConfig


class PitrConfig(AppConfig):
    name = "pitr"
    verbose_name = "Point-in-time recovery"

    def ready(self) -> None:
        # The catalog below never imports this app: it calls what is registered (catalog/registry.py).
        from catalog import registry
        from catalog.models import BASE_BACKUP_FORMAT
        from pitr import basebackups, monitoring, openapi, tasks

        registry.tick_steps["swept_pitr_restores"] = tasks.sweep_stale_pitr_restores
        registry.tick_steps["base_backups_wal_complete"] = tasks.mark_base_backups_wal
        registry.nightly_steps["wal"] = tasks.prune_wal
        registry.periodic_checks["wal"] = monitoring.check_wal_protection
        registry.moved_tasks["run_pitr_restore"] = tasks.run_pitr_restore
        registry.api_paths.update(openapi.PATHS)
        registry.api_schemas.update(openapi.SCHEMAS)
        registry.format_steps[BASE_BACKUP_FORMAT] = registry.FormatSteps(
            # The registry types run_problem as giving "" when a backup may start, and
            # copies_durable as giving nothing; these give None and the bounds recorded.
            # The catalog only tests the first for truth and ignores the second.
            run_problem=basebackups.protection_problem,
            copies_durable=basebackups.record_wal_bounds,
            waiting_for=basebackups.missing_wal,
            imported=basebackups.import_wal_bounds,
        )
