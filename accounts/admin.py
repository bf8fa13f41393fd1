"""People in the Django admin are records to inspect, like the catalog's: a
role, deactivation or password changes on the People page, which keeps the
last administrator and audits every change. The roles' groups are fixed
(catalog/roles.py), so they are not listed at all."""

from django.contrib import admin
from django.contrib.auth.admin import UserAdmin
from django.contrib.auth.models import Group, User

from catalog.admin import ReadOnlyAdmin

admin.site.unregister(User)
admin.site.unregister(Group)


@admin.register(User)
class PersonRecordAdmin(ReadOnlyAdmin, UserAdmin):
    list_display = ["username", "email", "is_active", "is_superuser", "last_login"]
