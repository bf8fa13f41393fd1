"""The Keys page: the active master key and its age, retired keys and what
still needs them, rotations with their progress. Administrators rotate (a
generated or an imported key) and destroy retired keys; auditors read.

Key material is never shown on a page. An administrator who re-enters their
password can download a key's file (audited; a key sealed in the metadata
database is exported as the same standard file), to keep a copy away from
this machine; or says they hold one already (audited too). Until either happened
for the active key, every page carries a banner (catalog/context_processors.py)."""

from typing import Any

from django import forms
from django.conf import settings
from django.contrib import messages
from django.contrib.auth import authenticate
from django.http import HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.utils import timezone
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_POST

from catalog import keyring, keys, services
from catalog.decorators import operator_required, viewer_required
from catalog.models import Key, KeyRotation
from catalog.views.common import AuthenticatedHttpRequest, HtmxHttpRequest, job_progress

# A key file is a few lines; anything much larger is not one.
MAX_KEY_FILE_BYTES = 4096


class RotateForm(forms.Form):
    GENERATE, PASTE, UPLOAD = "generate", "paste", "upload"
    source = forms.ChoiceField(
        label="New master key",
        choices=[
            (GENERATE, "Generate a new key here"),
            (PASTE, "Import: paste a base64 key (32 bytes)"),
            (UPLOAD, "Import: upload a Strongroom key file"),
        ],
        initial=GENERATE,
        widget=forms.RadioSelect,
    )
    pasted_key = forms.CharField(
        label="Base64 key (when pasting)",
        required=False,
        strip=True,
        widget=forms.PasswordInput(attrs={"autocomplete": "off"}),
    )
    key_file = forms.FileField(
        label="Key file (when uploading)",
        required=False,
        help_text="A file as Strongroom writes them: its id becomes the key's id.",
    )

    def clean(self) -> dict[str, Any]:
        super().clean()
        data = self.cleaned_data
        source = data.get("source")
        try:
            if source == self.PASTE:
                if not data.get("pasted_key"):
                    self.add_error("pasted_key", "Paste the key, or choose to generate one.")
                    return data
                data["key"], data["key_id"] = keys.decode_pasted_key(data["pasted_key"]), None
            elif source == self.UPLOAD:
                upload = data.get("key_file")
                if not upload:
                    self.add_error("key_file", "Choose the key file, or choose to generate a key.")
                    return data
                if upload.size > MAX_KEY_FILE_BYTES:
                    raise services.Refused("The uploaded file is too large to be a Strongroom master key file.")
                data["key_id"], data["key"] = keys.read_uploaded_key_file(upload.read())
            else:
                data["key"], data["key_id"] = None, None
        except services.Refused as exc:
            self.add_error("pasted_key" if source == self.PASTE else "key_file", str(exc))
        return data


def page_context(form: RotateForm | None = None) -> dict[str, object]:
    now = timezone.now()
    all_keys = list(Key.objects.select_related("copy_held_by"))
    needs = keys.usage([key.key_id for key in all_keys if not key.destroyed_at])
    rows = []  # (key, its age in days, what needs it, why it cannot be destroyed)
    for key in all_keys:
        need = needs.get(key.key_id, {"backups": [], "secrets": [], "opens": 0})
        refusal = keys.destruction_refusal(key, need) if not key.is_active and not key.destroyed_at else ""
        rows.append((key, (now - key.created_at).days, need, refusal))
    active = next((key for key in all_keys if key.is_active), None)
    rotations = list(KeyRotation.objects.select_related("new_key", "requested_by")[:20])

    return {
        "active": active,
        "active_age_days": (now - active.created_at).days if active else None,
        "rows": rows,
        "rotations": rotations,
        "rotation_days": settings.KEY_ROTATION_DAYS,
        "key_store": keyring.key_store(),
        "in_database": keyring.key_sealer() is not None,
        # With the database store, live keys that other hosts cannot find yet.
        "unsealed": [key for key in all_keys if not key.destroyed_at and not key.sealed_key]
        if keyring.key_sealer() is not None
        else [],
        "due": active is not None and (now - active.created_at).days >= settings.KEY_ROTATION_DAYS,
        "pending": len(keys.backups_to_rewrap(active.key_id)) if active else 0,
        "running": any(rotation.is_active() for rotation in rotations),
        "form": form or RotateForm(),
    }


@viewer_required
def listing(request: HttpRequest) -> HttpResponse:
    return render(request, "catalog/key_list.html", page_context())


@operator_required
@require_POST
@never_cache  # the answer holds a generated key's file: no cache may keep it
def rotate(request: HttpRequest) -> HttpResponse:
    form = RotateForm(request.POST, request.FILES)
    if not form.is_valid():
        return render(request, "catalog/key_list.html", page_context(form), status=400)
    data = form.cleaned_data
    try:
        rotation, generated = keys.start_rotation(request.user, key=data["key"], key_id=data["key_id"])
    except services.Refused as exc:
        form.add_error(None, str(exc))
        return render(request, "catalog/key_list.html", page_context(form), status=400)
    if generated is None:
        messages.success(request, f"Imported {rotation.new_key} and made it the active key; the rotation is running.")
        return redirect("key_list")
    # The key's bytes leave the machine only through `download`, after the password.
    return render(
        request,
        "catalog/key_created.html",
        {
            "rotation": rotation,
            "key": rotation.new_key,
            "file_name": f"{rotation.new_key.key_id}.key",
            "password_form": PasswordAgainForm(),
        },
    )


class PasswordAgainForm(forms.Form):
    password = forms.CharField(
        label="Your password", strip=False, widget=forms.PasswordInput(attrs={"autocomplete": "current-password"})
    )


def password_is_right(request: HttpRequest, password: str) -> bool:
    """Checked the way a sign-in is, so that django-axes counts wrong guesses
    and locks out a stolen session's guessing too."""
    return authenticate(request, username=request.user.get_username(), password=password) == request.user


@operator_required
@never_cache  # the answer is the key file itself: no cache may keep it
def download(request: AuthenticatedHttpRequest, pk: int) -> HttpResponse:
    """GET: the password form. POST: the key file exactly as it is on disk."""
    key = get_object_or_404(Key, pk=pk, destroyed_at__isnull=True)
    form = PasswordAgainForm(request.POST or None)
    if request.method == "POST" and form.is_valid():
        if not password_is_right(request, form.cleaned_data["password"]):
            form.add_error("password", "That is not your password: the key file was not downloaded.")
        else:
            try:
                data = keys.download_key(request.user, key)
            except services.Refused as exc:
                form.add_error(None, str(exc))
            else:
                response = HttpResponse(data, content_type="application/octet-stream")
                response["Content-Disposition"] = f'attachment; filename="{key.key_id}.key"'
                return response
    status = 400 if request.method == "POST" else 200
    return render(
        request,
        "catalog/key_download.html",
        {"key": key, "form": form, "file_name": f"{key.key_id}.key"},
        status=status,
    )


@operator_required
@require_POST
def record_copy(request: AuthenticatedHttpRequest, pk: int) -> HttpResponse:
    key = get_object_or_404(Key, pk=pk)
    if not request.POST.get("holds_copy"):
        messages.error(request, f"Tick the box to say you hold a copy of {key}'s file away from this machine.")
        return redirect("key_list")
    try:
        keys.confirm_copy_held(request.user, key)
    except services.Refused as exc:
        messages.error(request, str(exc))
    else:
        messages.success(request, f"Recorded that you hold a copy of {key} away from this machine.")
    return redirect("key_list")


@viewer_required
def rotation_progress(request: HtmxHttpRequest, pk: int) -> HttpResponse:
    """Polled by htmx while a rotation runs."""
    rotation = get_object_or_404(KeyRotation.objects.select_related("new_key"), pk=pk)
    return job_progress(request, rotation, "catalog/partials/key_rotation_progress.html", {"rotation": rotation})


@operator_required
@require_POST
def rotation_resume(request: HttpRequest, pk: int) -> HttpResponse:
    rotation = get_object_or_404(KeyRotation, pk=pk)
    try:
        keys.resume_rotation(request.user, rotation)
    except services.Refused as exc:
        messages.error(request, str(exc))
    else:
        messages.success(request, f"Rotation #{rotation.pk} resumed: it re-wraps what is left.")
    return redirect("key_list")


@operator_required
@require_POST
def rotation_cancel(request: HttpRequest, pk: int) -> HttpResponse:
    rotation = get_object_or_404(KeyRotation, pk=pk)
    try:
        keys.cancel_rotation(request.user, rotation)
    except services.Refused as exc:
        messages.error(request, str(exc))
    else:
        messages.success(request, f"Rotation #{rotation.pk} stops after the backup it is re-wrapping.")
    return redirect("key_list")


@operator_required
@require_POST
def destroy(request: HttpRequest, pk: int) -> HttpResponse:
    key = get_object_or_404(Key, pk=pk)
    if request.POST.get("confirm_key_id", "").strip() != key.key_id:
        messages.error(request, f"Type the key id {key.key_id} to confirm its destruction.")
        return redirect("key_list")
    was_sealed = key.is_sealed()
    try:
        keys.destroy_key(request.user, key)
    except services.Refused as exc:
        messages.error(request, str(exc))
    else:
        gone = "its sealed copy is wiped from the metadata database" if was_sealed else "its key file is deleted"
        messages.success(request, f"Destroyed {key}: {gone}.")
    return redirect("key_list")
