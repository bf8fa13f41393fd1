"""Restore pages: the wizard (what, where, scope, mode, review), the running
job with its steps and report, and the history. The wizard's "download"
choice ends at the backup's own download (catalog/views/downloads.py)."""

from collections.abc import Sequence
from typing import Any

from django.contrib import messages
from django.db.models import QuerySet
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.views.decorators.http import require_POST

from catalog.decorators import operator_required, viewer_required
from catalog.engine import mariadb_restore
from catalog.engine.errors import EngineError
from catalog.models import BASE_BACKUP_FORMAT, Backup, RestoreServer, Source, major_release
from catalog.services import Refused
from catalog.views.common import AuthenticatedHttpRequest, HtmxHttpRequest, chosen, job_progress, page_of
from restore import mariadb as mariadb_restore_app
from restore import services
from restore.models import RestoreJob
from restore.wizard import DOWNLOAD, STEPS, Wizard


@viewer_required
def restore_list(request: HttpRequest) -> HttpResponse:
    jobs = RestoreJob.objects.select_related("backup", "source", "requested_by")
    return render(request, "restore/restore_list.html", {"page": page_of(request, jobs)})


@viewer_required
def restore_detail(request: HttpRequest, pk: int) -> HttpResponse:
    job = get_object_or_404(RestoreJob.objects.select_related("backup", "source", "safety_backup"), pk=pk)
    return render(request, "restore/restore_detail.html", {"job": job})


@viewer_required
def restore_progress(request: HtmxHttpRequest, pk: int) -> HttpResponse:
    job = get_object_or_404(RestoreJob, pk=pk)
    return job_progress(request, job, "restore/partials/steps.html", {"job": job})


@operator_required
@require_POST
def restore_cancel(request: AuthenticatedHttpRequest, pk: int) -> HttpResponse:
    job = get_object_or_404(RestoreJob, pk=pk)
    try:
        services.cancel_restore(request.user, job)
    except Refused as exc:
        messages.error(request, str(exc))
    return redirect(job)


# --- the wizard -----------------------------------------------------------------


def wizard_page(request: HttpRequest, step: str, wizard: Wizard, **context: Any) -> HttpResponse:
    return render(request, f"restore/wizard_{step}.html", {"wizard": wizard, "steps": STEPS, "step": step, **context})


@operator_required
def start(request: HttpRequest) -> HttpResponse:
    """Entry from a backup's page (?backup=N) or from the menu."""
    wizard = Wizard(request.session)
    wizard.reset()
    backup = chosen(Backup.objects, request.GET.get("backup"))
    if backup:
        wizard.save(source=backup.source_id, backup=backup.pk)
    return redirect("restore_step", step="what")


@operator_required
def step_what(request: HttpRequest) -> HttpResponse:
    wizard = Wizard(request.session)
    if request.method == "POST":
        backup = chosen(Backup.objects.filter(status__in=Backup.WITH_DATA), request.POST.get("backup"))
        if backup is None or backup.is_pruned():
            messages.error(request, "Pick a backup that still has a stored copy.")
        else:
            if backup.pk != wizard.data.get("backup"):
                wizard.save(tables=[], database="")  # choices made for another backup do not carry over
            wizard.save(source=backup.source_id, backup=backup.pk)
            return redirect("restore_step", step="where")
    source = chosen(Source.objects, request.GET.get("source") or wizard.data.get("source"))
    return wizard_page(request, "what", wizard, sources=Source.objects.all(), source=source, backups=backups_of(source))


def backups_of(source: Source | None) -> QuerySet[Backup] | list[Backup]:
    if source is None:
        return []
    # A physical base backup is restored by the point-in-time path, not here.
    return (
        Backup.objects.filter(source=source, status__in=Backup.WITH_DATA, pruned_at__isnull=True)
        .exclude(format=BASE_BACKUP_FORMAT)
        .prefetch_related("verifications")
        .order_by("-created_at")[:50]
    )


@operator_required
def backup_choices(request: HttpRequest) -> HttpResponse:
    """The backups of the source picked on step 1 (htmx)."""
    wizard = Wizard(request.session)
    source = chosen(Source.objects, request.GET.get("source"))
    return render(request, "restore/partials/backup_choices.html", {"wizard": wizard, "backups": backups_of(source)})


@operator_required
def step_where(request: HttpRequest) -> HttpResponse:
    wizard = Wizard(request.session)
    if wizard.first_missing_step() == "what":
        return redirect("restore_step", step="what")
    backup = wizard.backup
    assert backup is not None  # not missing, as first_missing_step() says
    servers = server_choices(backup)
    if request.method == "POST":
        target = request.POST.get("target")
        if target == DOWNLOAD:
            wizard.save(target=DOWNLOAD)
            return redirect("restore_step", step="review")
        # Another server takes new databases only; the existing one is the source's.
        server, refusal = (
            chosen_server(request.POST.get("restore_server"), servers) if target == RestoreJob.NEW else (None, "")
        )
        if target in (RestoreJob.NEW, RestoreJob.EXISTING) and not refusal:
            wizard.save(
                target=target,
                database=request.POST.get("database", "").strip(),
                restore_server=server.pk if server else None,
            )
            if target == RestoreJob.EXISTING or wizard.data["database"]:
                return redirect("restore_step", step="scope")
        messages.error(request, refusal or "Choose where to restore to, and name the new database.")
    suggested = wizard.data.get("database") or services.suggest_database_name(backup, wizard.restore_server)
    return wizard_page(
        request,
        "where",
        wizard,
        suggested=suggested,
        servers=servers,
        chosen_server=wizard.data.get("restore_server"),
        backup_server=server_release(backup),
        server_kind="MariaDB/MySQL" if backup.source.engine == "mariadb" else "PostgreSQL",
        existing_ways=services.ways_into_existing(backup),
        existing_refused=mariadb_restore_app.EXISTING_REFUSED if backup.source.engine == "mariadb" else "",
        existing_gone=existing_gone(backup.source),
        target_kind="file" if backup.source.engine == "sqlite" else "database",
    )


def server_release(backup: Backup) -> str:
    """The server the backup was taken on, as the where step names it ("PostgreSQL 15")."""
    if backup.source.engine == "mariadb":
        return mariadb_restore.release(backup.server_version)
    release = major_release(backup.server_version)
    return f"PostgreSQL {release}" if release else ""


def existing_gone(source: Source) -> str:
    """Why the source's own database cannot be chosen, in words; "" when it
    can (or when its server cannot be asked now: the request checks again)."""
    if source.engine != "postgresql":
        return ""
    try:
        return "" if services.existing_database_present(source) else services.gone_in_words(source)
    except EngineError:
        return ""


def server_choices(backup: Backup) -> list[tuple[RestoreServer, str]]:
    """[(server, why it cannot take this backup or "")] for each registered
    server, judged by the version its last check recorded (the request checks
    the server itself again), of the backup's engine. A SQLite backup goes
    to a file: no server."""
    if backup.source.engine == "sqlite":
        return []
    servers = RestoreServer.objects.filter(engine=backup.source.engine)
    return [(server, server.refusal_for(backup.server_version)) for server in servers]


def chosen_server(value: str | None, servers: Sequence[tuple[RestoreServer, str]]) -> tuple[RestoreServer | None, str]:
    """(server or None for the source's own, refusal in words or "") for the
    posted choice; a server removed or refused meanwhile is said so."""
    if not value:
        return None, ""
    for server, refusal in servers:
        if str(server.pk) == value:
            return server, refusal and f"{server} cannot take this backup: {refusal}"
    return None, "That server is no longer registered; choose another."


@operator_required
def step_scope(request: HttpRequest) -> HttpResponse:
    wizard = Wizard(request.session)
    if wizard.first_missing_step():
        return redirect("restore_step", step=wizard.first_missing_step())
    backup = wizard.backup
    assert backup is not None  # not missing, as first_missing_step() says
    if request.method == "POST":
        tables = request.POST.getlist("tables") if request.POST.get("scope") == "some" else []
        if request.POST.get("scope") == "some" and not tables:
            messages.error(request, "Tick the tables to restore, or choose everything.")
        else:
            wizard.save(tables=sorted(set(tables) & set(backup.restorable_tables())))
            next_step = "mode" if wizard.target == RestoreJob.EXISTING else "review"
            return redirect("restore_step", step=next_step)
    group = "database" if backup.source.engine == "mariadb" else "schema"
    return wizard_page(request, "scope", wizard, schemas=tables_by_schema(backup), group=group)


def tables_by_schema(backup: Backup) -> list[tuple[str, list[tuple[str, int, list[tuple[str, int]]]]]]:
    """[(schema, [(table, rows, [(partition, rows), ...]), ...]), ...] in name
    order: a partitioned parent chooses all its partitions, which are listed
    under it rather than among the tables; SQLite tables are in "main", and a
    MariaDB backup's (one database, whose table names may hold a dot) under
    the database's name."""
    restorable = backup.restorable_tables()
    under_a_parent = set(backup.leaf_tables(backup.partitions)) - set(backup.partitions)
    schemas: dict[str, list[tuple[str, int, list[tuple[str, int]]]]] = {}
    for table, rows in sorted(restorable.items()):
        if table in under_a_parent:
            continue
        if backup.source.engine == "mariadb":
            schema = backup.source.dbname
        else:
            schema = table.split(".", 1)[0] if "." in table else "main"
        partitions = [(leaf, restorable.get(leaf, 0)) for leaf in backup.partitions.get(table, ())]
        schemas.setdefault(schema, []).append((table, rows, partitions))
    return sorted(schemas.items())


@operator_required
def step_mode(request: HttpRequest) -> HttpResponse:
    wizard = Wizard(request.session)
    if wizard.first_missing_step():
        return redirect("restore_step", step=wizard.first_missing_step())
    backup = wizard.backup
    assert backup is not None  # not missing, as first_missing_step() says
    if request.method == "POST":
        mode = request.POST.get("mode")
        if mode in dict(modes_for(backup)):
            wizard.save(mode=mode)
            return redirect("restore_step", step="review")
        messages.error(
            request,
            "Choose how to restore: " + ", ".join(label.split(":")[0].lower() for _, label in modes_for(backup)) + ".",
        )
    return wizard_page(request, "mode", wizard, modes=modes_for(backup))


def modes_for(backup: Backup) -> list[tuple[str, str]]:
    """An export holds chosen tables, perhaps filtered: it can be compared or
    merged, never replace what it left out (restore.services refuses that too)."""
    if backup.is_export():
        return [(mode, label) for mode, label in RestoreJob.MODE_CHOICES if mode != RestoreJob.FULL]
    return RestoreJob.MODE_CHOICES


@operator_required
def step_review(request: AuthenticatedHttpRequest) -> HttpResponse:
    wizard = Wizard(request.session)
    if wizard.first_missing_step():
        return redirect("restore_step", step=wizard.first_missing_step())
    if wizard.target == DOWNLOAD:
        return wizard_page(request, "review", wizard, download=True)
    job = wizard.draft()
    if request.method == "POST":
        try:
            job = services.request_restore(
                request.user,
                job.backup,  # the draft's, which is the wizard's
                target=wizard.target,
                database=wizard.database(),
                tables=wizard.tables,
                mode=wizard.mode,
                confirmed_name=request.POST.get("confirm", "").strip(),
                restore_server=wizard.restore_server,
                terminate_connections=request.POST.get("terminate_connections") == "on",
                without_owners=request.POST.get("owners") == "without",
                create_missing_roles=request.POST.get("owners") == "create",
            )
        except Refused as exc:
            messages.error(request, str(exc))
        else:
            wizard.reset()
            return redirect(job)
    return wizard_page(request, "review", wizard, job=job, missing_roles=services.roles_missing_on_target(job))


STEP_VIEWS = {"what": step_what, "where": step_where, "scope": step_scope, "mode": step_mode, "review": step_review}


def step(request: AuthenticatedHttpRequest, step: str) -> HttpResponse:  # signed in: LoginRequiredEverywhere
    if step not in STEP_VIEWS:
        raise Http404("The restore wizard has no such step.")
    return STEP_VIEWS[step](request)
