from django.apps import AppConfig


class PitrConfig(AppConfig):
    name = "pitr"
    verbose_name = "Point-in-time recovery"
