from django.apps import AppConfig


class AccountsConfig(AppConfig):
    """People and sign-in: the users and roles page, two-factor
    authentication and single sign-on. Sits above `catalog` (it records audit
    events and lists API tokens there); nothing below imports it."""

    name = "accounts"
    verbose_name = "People and sign-in"
