"""The users and roles page: administrators add people, give them a role,
deactivate them and send password resets; auditors see the list. A
set-password link is shown once, in the answer to the POST that made it."""

from collections.abc import Callable

from django.conf import settings
from django.contrib import messages
from django.contrib.auth.models import User
from django.db.models import Count, Q
from django.http import HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.utils import timezone
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_POST

from accounts import mail, people, sso, two_factor
from accounts.forms import PASSWORD, PersonChangeForm, PersonForm
from accounts.models import SignInPolicy
from catalog.api import tokens
from catalog.api.models import ApiToken
from catalog.audit import Actor
from catalog.decorators import operator_required, viewer_required
from catalog.errors import Refused
from catalog.models import AuditEvent


@viewer_required
def listing(request: HttpRequest) -> HttpResponse:
    now = timezone.now()
    live_tokens = Q(apitoken__revoked_at__isnull=True) & (
        Q(apitoken__expires_at__isnull=True) | Q(apitoken__expires_at__gt=now)
    )
    users = (
        User.objects.prefetch_related("groups", "sso_identities")
        .annotate(token_count=Count("apitoken", filter=live_tokens))
        .order_by("-is_active", "username")
    )
    enrolled = two_factor.users_with_two_factor()
    rows = [people.summary(user, user.pk in enrolled) for user in users]
    return render(request, "accounts/people_list.html", {"rows": rows, "policy": SignInPolicy.current()})


@viewer_required
def detail(request: HttpRequest, pk: int) -> HttpResponse:
    person = get_object_or_404(User, pk=pk)
    now = timezone.now()
    token_rows = [(token, tokens.status_of(token, now)) for token in ApiToken.objects.filter(created_by=person)]
    events = AuditEvent.objects.filter(object_type="user", object_id=str(person.pk)).order_by("-id")[:20]
    form = PersonChangeForm(initial={"email": person.email, "role": people.assigned_role(person)})
    context = {
        "person": people.summary(person, two_factor.has_two_factor(person)),
        "recovery_codes_left": two_factor.recovery_codes_left(person),
        # A role set here lasts only until their next sign-in, when their groups set it again.
        "role_from_provider": person.sso_identities.exists() and sso.roles_follow_groups(),
        "provider_name": settings.OIDC_PROVIDER_NAME,
        "form": form,
        "token_rows": token_rows,
        "events": events,
    }
    return render(request, "accounts/person_detail.html", context)


@operator_required
@never_cache  # the answer to the POST may hold a set-password link
def new(request: HttpRequest) -> HttpResponse:
    form = PersonForm(request.POST or None)
    if request.method == "POST" and form.is_valid():
        data = form.cleaned_data
        password = data["password"] if data["sign_in"] == PASSWORD else None
        person = people.create_person(request.user, data["username"], data["email"], data["role"], password)
        if password is not None:
            messages.success(request, f"Added {person}. They sign in with the password you set.")
            return redirect("person_detail", person.pk)
        return link_page(request, person, invitation=True)
    return render(request, "accounts/person_new.html", {"form": form})


@operator_required
@require_POST
def change(request: HttpRequest, pk: int) -> HttpResponse:
    person = get_object_or_404(User, pk=pk)
    form = PersonChangeForm(request.POST)
    if not form.is_valid():
        messages.error(request, "Choose a role, and give a valid e-mail address or none.")
        return redirect("person_detail", pk)
    try:
        people.set_email(request.user, person, form.cleaned_data["email"])
        changed = people.set_role(request.user, person, form.cleaned_data["role"])
    except Refused as exc:
        messages.error(request, str(exc))
    else:
        role = people.role_label(person)
        messages.success(request, f"{person} is now: {role}." if changed else f"Saved {person}.")
    return redirect("person_detail", pk)


@operator_required
@require_POST
def deactivate(request: HttpRequest, pk: int) -> HttpResponse:
    done = "Deactivated {}: they are signed out, and their API tokens are refused."
    return switch(request, pk, people.deactivate, done)


@operator_required
@require_POST
def reactivate(request: HttpRequest, pk: int) -> HttpResponse:
    return switch(request, pk, people.reactivate, "Reactivated {}.")


def switch(request: HttpRequest, pk: int, service: Callable[[Actor, User], None], done: str) -> HttpResponse:
    """Deactivating and reactivating: the service, its refusal or `done` said, back to the person's page."""
    person = get_object_or_404(User, pk=pk)
    try:
        service(request.user, person)
    except Refused as exc:
        messages.error(request, str(exc))
    else:
        messages.success(request, done.format(person))
    return redirect("person_detail", pk)


@operator_required
@require_POST
@never_cache
def password_reset(request: HttpRequest, pk: int) -> HttpResponse:
    person = get_object_or_404(User, pk=pk)
    try:
        return link_page(request, person, invitation=False)
    except Refused as exc:
        messages.error(request, str(exc))
        return redirect("person_detail", pk)


def link_page(request: HttpRequest, person: User, invitation: bool) -> HttpResponse:
    url = request.build_absolute_uri(people.password_reset_path(request.user, person, invitation))
    not_sent = mail.send_set_password_link(person, url, invitation)
    days = people.link_lifetime_days()
    context = {"person": person, "url": url, "invitation": invitation, "not_sent": not_sent, "days": days}
    return render(request, "accounts/person_link.html", context)
