from django.apps import AppConfig


class DrillsConfig(AppConfig):
    name = "drills"
    verbose_name = "DR drills"

    def ready(self) -> None:
        # The catalog below never imports this app: it calls what is registered (catalog/registry.py).
        from catalog import registry
        from drills import monitoring, tasks

        registry.tick_steps["drills"] = tasks.run_drill_checks
        registry.periodic_checks["drills_overdue"] = monitoring.check_overdue_drills
