"""Role checks for views: reading needs the viewer permission, changing
anything needs `catalog.operate` (Administrators)."""

from functools import wraps

from django.core.exceptions import PermissionDenied


def require_perm(perm):
    def decorator(view):
        @wraps(view)
        def wrapped(request, *args, **kwargs):
            if not request.user.has_perm(perm):
                raise PermissionDenied
            return view(request, *args, **kwargs)

        return wrapped

    return decorator


viewer_required = require_perm("catalog.view_backup")
operator_required = require_perm("catalog.operate")
