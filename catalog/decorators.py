"""Role checks for views: reading needs the viewer permission, changing
anything needs `catalog.operate` (Administrators)."""

from collections.abc import Callable
from functools import wraps
from typing import Concatenate, ParamSpec, TypeVar

from django.core.exceptions import PermissionDenied
from django.http import HttpRequest
from django.http.response import HttpResponseBase

P = ParamSpec("P")
# A view may take a narrower request (an htmx or a signed-in user's): the check keeps its signature.
RequestT = TypeVar("RequestT", bound=HttpRequest)
ResponseT = TypeVar("ResponseT", bound=HttpResponseBase)
View = Callable[Concatenate[RequestT, P], ResponseT]


def require_perm(perm: str) -> Callable[[View[RequestT, P, ResponseT]], View[RequestT, P, ResponseT]]:
    def decorator(view: View[RequestT, P, ResponseT]) -> View[RequestT, P, ResponseT]:
        @wraps(view)
        def wrapped(request: RequestT, *args: P.args, **kwargs: P.kwargs) -> ResponseT:
            if not request.user.has_perm(perm):
                raise PermissionDenied
            return view(request, *args, **kwargs)

        return wrapped

    return decorator


viewer_required = require_perm("catalog.view_backup")
operator_required = require_perm("catalog.operate")
