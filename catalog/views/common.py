"""What the page modules share: paging, picking a row by id, a safe way back,
the create/edit/delete/test pages of configuration, and polled progress."""

from collections.abc import Callable, Mapping
from typing import Any, TypeVar

from django.contrib import messages
from django.contrib.auth.models import AbstractBaseUser, AnonymousUser, User
from django.core.paginator import Page, Paginator
from django.db.models import Manager, Model, QuerySet
from django.forms import BaseForm
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.utils.http import url_has_allowed_host_and_scheme
from django_htmx.middleware import HtmxDetails

from catalog import services
from catalog.alerts.models import Channel
from catalog.forms import DestinationForm, PlanForm, RestoreServerForm, SourceForm
from catalog.models import BackupPlan, Destination, Job, RestoreServer, Source

PAGE_SIZE = 25

ModelT = TypeVar("ModelT", bound=Model)
# What the shared delete page removes, and what the shared Test button tries.
ConfiguredT = TypeVar("ConfiguredT", Source, Destination, BackupPlan, RestoreServer, Channel)
TestedT = TypeVar("TestedT", Source, Destination, RestoreServer)


class HtmxHttpRequest(HttpRequest):
    """A request as django-htmx's middleware leaves it: with its `htmx` details."""

    htmx: HtmxDetails


class AuthenticatedHttpRequest(HttpRequest):
    """A request behind operator_required or viewer_required: a signed-in user's, never an anonymous one."""

    user: User


def page_of(request: HttpRequest, queryset: QuerySet[ModelT]) -> Page[ModelT]:
    return Paginator(queryset, PAGE_SIZE).get_page(request.GET.get("page"))


def chosen(queryset: Manager[ModelT] | QuerySet[ModelT], value: str | None) -> ModelT | None:
    """The row a form field or query string names by id, or None when it names
    none: missing, or not an id at all (a hand-edited URL), which the ORM
    would otherwise raise on."""
    value = str(value or "").strip()
    return queryset.filter(pk=value).first() if value.isdecimal() else None


def next_url(request: HttpRequest, default: str) -> str:
    """Where a form asks to go back to: a path on this site only, never
    another site (an open redirect) nor something that is no URL at all."""
    url = request.POST.get("next", "")
    if url.startswith("/") and url_has_allowed_host_and_scheme(url, {request.get_host()}, request.is_secure()):
        return url
    return default


def edit_config(
    request: HttpRequest,
    form_class: type[SourceForm | DestinationForm | PlanForm],
    instance: Source | Destination | BackupPlan,
    save: Callable[..., object],
    template: str,
    **context: object,
) -> HttpResponse:
    """Create/edit page shared by sources, destinations and plans."""
    form = form_class(request.POST or None, instance=instance)
    if request.method == "POST" and form.is_valid():
        obj = form.save(commit=False)
        kwargs: dict[str, Any] = {"changed_fields": form.changed_fields()}  # the save service's keywords
        if hasattr(form, "secrets"):
            kwargs["secrets"] = form.secrets()
        if "destinations" in form.cleaned_data:
            kwargs["destinations"] = form.cleaned_data["destinations"]
        save(request.user, obj, **kwargs)
        messages.success(request, f"Saved {obj}.")
        return redirect(obj)
    return render(request, template, {"form": form, "object": instance, **context})


def delete_config(
    request: HttpRequest,
    instance: ConfiguredT,
    delete: Callable[[AbstractBaseUser | AnonymousUser, ConfiguredT], object],
    back: str,
) -> HttpResponse:
    if request.method == "POST":
        try:
            delete(request.user, instance)
        except services.Refused as exc:
            messages.error(request, str(exc))
            return redirect(instance)
        messages.success(request, f"Deleted {instance}.")
        return redirect(back)
    return render(request, "catalog/confirm_delete.html", {"object": instance, "kind": instance._meta.verbose_name})


def form_errors_in_words(form: BaseForm) -> str:
    """E.g. "Host: Required unless you give a connection string. Port: …", for
    an answer that stands alone (a Test button's: the form is not shown again)."""
    said = [
        f"{form[name].label if name in form.fields else 'The form'}: {' '.join(str(error) for error in errors)}"
        for name, errors in form.errors.items()
    ]
    return " ".join(text if text.endswith(".") else text + "." for text in said)


def test_config(
    request: HttpRequest,
    model: type[TestedT],
    form_class: type[SourceForm | DestinationForm | RestoreServerForm],
    id_field: str,
    test: Callable[..., tuple[bool, str]],
) -> HttpResponse:
    """Runs `test` on the unsaved form values; stored secrets fill blank fields."""
    instance = chosen(model.objects, request.POST.get(id_field)) or model()
    form = form_class(request.POST, instance=instance)
    if not form.is_valid():
        ok, message = False, "Not tried yet: " + form_errors_in_words(form)
    else:
        ok, message = test(form.save(commit=False), secrets=form.secrets())
    return render(request, "catalog/partials/test_result.html", {"ok": ok, "message": message})


def job_progress(request: HtmxHttpRequest, job: Job, template: str, context: Mapping[str, object]) -> HttpResponse:
    """A polled progress partial; once the job is over, the whole page reloads
    to show its final state (sizes, evidence, report)."""
    response = render(request, template, context)
    if not job.is_active() and request.htmx:
        response["HX-Refresh"] = "true"
    return response
