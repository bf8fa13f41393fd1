from django.apps import AppConfig


class AccountsConfig(AppConfig):
    """People and sign-in: the users and roles page, two-factor
    authentication and single sign-on. Sits above `catalog` (it records audit
    events and lists API tokens there); nothing below imports it."""

    name = "accounts"
    verbose_name = "People and sign-in"

    def ready(self) -> None:
        from django.contrib import admin

        from accounts.views.sign_in import admin_login

        # The admin's own login page would sign in with a password alone, past the second factor.
        admin.site.login = admin_login  # type: ignore[method-assign]
