"""API token pages: administrators create and revoke tokens; auditors see the
list. A new token's secret is shown once, in the answer to the POST that
made it, and never again."""

from django.contrib import messages
from django.http import HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.utils import timezone
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_POST

from catalog import services
from catalog.api import tokens
from catalog.api.forms import TokenForm
from catalog.api.models import ApiToken
from catalog.decorators import operator_required, viewer_required


@viewer_required
def listing(request: HttpRequest) -> HttpResponse:
    now = timezone.now()
    rows = [(token, tokens.status_of(token, now)) for token in ApiToken.objects.select_related("created_by")]
    return render(request, "catalog/token_list.html", {"rows": rows})


@operator_required
@never_cache  # the answer to the POST holds the raw token: no cache may keep it
def new(request: HttpRequest) -> HttpResponse:
    form = TokenForm(request.POST or None)
    if request.method == "POST" and form.is_valid():
        data = form.cleaned_data
        token, raw = tokens.create_token(request.user, data["name"], data["scopes"], data["expires_in_days"])
        return render(request, "catalog/token_created.html", {"token": token, "raw_token": raw})
    return render(request, "catalog/token_new.html", {"form": form})


@operator_required
@require_POST
def revoke(request: HttpRequest, pk: int) -> HttpResponse:
    token = get_object_or_404(ApiToken, pk=pk)
    try:
        tokens.revoke_token(request.user, token)
    except services.Refused as exc:
        messages.error(request, str(exc))
    else:
        messages.success(request, f"Revoked {token}. Requests with it are refused from now on.")
    return redirect("token_list")
