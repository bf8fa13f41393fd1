from django.conf import settings


def branding(request):
    user = getattr(request, "user", None)
    can_operate = bool(user and user.is_authenticated and user.has_perm("catalog.operate"))
    return {"site_name": settings.SITE_NAME, "can_operate": can_operate, "time_zone": settings.TIME_ZONE}
