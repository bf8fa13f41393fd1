"""Importing a dump made elsewhere ("bring your own dump", issue 26): a
file uploaded in the browser, an object in a registered destination, or a
file on this host (`manage.py import_dump`) becomes a backup of a source,
stored through its plan like any other: compressed, encrypted, with its
manifest, in every destination of the plan.

Every way in first puts the file in a staging directory of its own under the
data directory (private, like everything Strongroom writes), as `input`.
import_dump() checks it there (catalog/engine/imports.py: its format by its
bytes, its engine against the source's, read to its end, its rows counted);
a refusal removes the staging directory and leaves nothing else, no backup
row either. A file that passes becomes a queued backup marked imported
(Backup.trigger "import", with who, from where and what the file was), and
its staging directory becomes the backup's spool (backup_runs.spool_dir),
where the run finds it: backup_runs.open_dump feeds it to the pipeline in
place of pg_dump, and finish_backup removes it whatever the outcome. The run
is queued on this host's own queue, since the file is on this host's disk.
"""

import logging
import os
import shutil
import tempfile
import time
from datetime import timedelta
from pathlib import Path

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from catalog import audit, backup_runs, queues
from catalog.engine import imports as dumps
from catalog.engine.errors import EngineError
from catalog.engine.files import create_private_file, make_private_dirs
from catalog.errors import Refused
from catalog.models import BASE_BACKUP_FORMAT, Backup, BackupPlan, Destination, Source, host_conflict
from catalog.text import size_text

log = logging.getLogger(__name__)

INPUT = dumps.INPUT


def staging_root() -> Path:
    """Where imports wait: beside the backups' spools, so that a staging
    directory becomes a backup's spool by a rename."""
    return Path(make_private_dirs(settings.DATA_DIR / "tmp"))


# A staging directory untouched for this long belongs to an import whose
# process died (killed mid-upload or mid-check): a live one is written to, or
# becomes a backup's spool, well within it.
ABANDONED_AFTER = timedelta(hours=24)


def new_staging() -> Path:
    """A new, private staging directory for one import. Each new one first
    clears away the abandoned ones on this host (where they are: the tick
    runs on one host only)."""
    sweep_abandoned_staging()
    return Path(tempfile.mkdtemp(prefix="import-", dir=staging_root()))


def sweep_abandoned_staging(now: float | None = None) -> list[str]:
    """Removes the staging directories of imports that died, so that a killed
    upload leaves nothing behind for longer than a day. Returns their names."""
    threshold = (now if now is not None else time.time()) - ABANDONED_AFTER.total_seconds()
    removed = []
    for staging in staging_root().glob("import-*"):
        try:
            newest = max([staging.lstat().st_mtime] + [entry.lstat().st_mtime for entry in staging.iterdir()])
        except FileNotFoundError:  # an import that just finished or was refused took it away
            continue
        if newest < threshold:
            discard(staging)
            removed.append(staging.name)
    if removed:
        log.warning("Removed the staging directories of %d abandoned imports: %s", len(removed), ", ".join(removed))
    return removed


def discard(staging: Path) -> None:
    shutil.rmtree(staging, ignore_errors=True)


def too_large(size: int) -> str:
    limit = settings.IMPORT_MAX_BYTES
    return (
        f"The file is larger than the import limit of {size_text(limit)} ({size_text(size)} or more): nothing was "
        "kept. The limit is STRONGROOM_IMPORT_MAX_BYTES."
    )


def stage_local_file(path: str) -> Path:
    """A file on this host's disk, staged by a link: it is read where it is,
    and stays there whatever happens to the import."""
    path = os.path.abspath(path)
    if not os.path.isfile(path):
        raise Refused(f"There is no file {path}.")
    size = os.path.getsize(path)
    if size > settings.IMPORT_MAX_BYTES:
        raise Refused(too_large(size))
    staging = new_staging()
    os.symlink(path, staging / INPUT)
    return staging


def stage_object(destination: Destination, key: str) -> Path:
    """An object of a registered destination, read through its storage
    backend into a new staging directory, the size limit kept as it comes."""
    key = key.strip().lstrip("/")
    if not key:
        raise Refused("Name the object's key in the destination.")
    if problem := destination.elsewhere_text():
        raise Refused(problem)
    staging = new_staging()
    try:
        storage = destination.storage()
        if not storage.exists(key):
            raise Refused(f"{destination} has no object {key}.")
        written = 0
        with create_private_file(staging / INPUT) as out:
            for chunk in storage.open_reader(key):
                written += len(chunk)
                if written > settings.IMPORT_MAX_BYTES:
                    raise Refused(too_large(written))
                out.write(chunk)
    except EngineError as exc:
        discard(staging)
        raise Refused(f"Cannot read {key} from {destination}: {exc}") from exc
    except BaseException:
        discard(staging)
        raise
    return staging


def object_location(destination: Destination, key: str) -> str:
    """What an imported backup says it came from: "s3://bucket/prefix/key"."""
    return f"{destination.location_display().split(' (')[0].rstrip('/')}/{key.strip().lstrip('/')}"


def default_plan(source: Source) -> BackupPlan:
    """The plan an import goes into when none is chosen: the source's only plan of whole dumps."""
    plans = list(importing_plans(source))
    if len(plans) != 1:
        names = ", ".join(plan.name for plan in plans) or "none yet"
        raise Refused(f"Choose the plan to import into (the plans of {source} that can take a dump: {names}).")
    return plans[0]


def importing_plans(source: Source) -> list[BackupPlan]:
    """The source's plans whose backups are whole dumps: an export's tables
    or a physical base backup are not what a dump is."""
    return [
        plan for plan in source.plans.order_by("name") if not plan.is_export() and plan.format != BASE_BACKUP_FORMAT
    ]


def check_plan(source: Source, plan: BackupPlan) -> None:
    if plan.source_id != source.pk:
        raise Refused(f"Plan {plan} backs up {plan.source}, not {source}.")
    if plan.is_export() or plan.format == BASE_BACKUP_FORMAT:
        raise Refused(f"Plan {plan} makes {plan.get_format_display().lower()}; a dump goes into a plan of whole dumps.")
    if not plan.destinations.exists():
        raise Refused(f"Plan {plan} has no destination to write to.")
    if problem := host_conflict(plan.destinations.all()):
        raise Refused(f"Plan {plan} cannot take the dump: {problem}")
    host = plan.required_host()
    if host not in ("", settings.HOST_NAME):
        raise Refused(
            f"Plan {plan} writes to a folder on {host}'s disk, and the file is on {settings.HOST_NAME}: "
            f"import it on {host}."
        )


def import_dump(
    actor: audit.Actor,
    staging: Path,
    source: Source,
    plan: BackupPlan | None = None,
    *,
    label: str = "",
    imported_from: str,
    enqueue: bool = True,
) -> Backup:
    """Checks the staged file and makes it a queued backup of `plan` (by
    default the source's one plan of dumps), queued for this host's workers
    unless `enqueue` is off (the caller runs it: tasks.run_backup). Takes the
    staging directory over: on a refusal it is gone, and so is everything else."""
    try:
        plan = plan or default_plan(source)
        check_plan(source, plan)
        size = os.path.getsize(staging / INPUT)
        if size > settings.IMPORT_MAX_BYTES:
            raise Refused(too_large(size))
        try:
            checked = dumps.check_dump(str(staging), source.engine, str(source), pg_restore=settings.PG_RESTORE)
        except dumps.ImportRefused as exc:
            raise Refused(f"{exc} Nothing was imported.") from exc
        with transaction.atomic():
            backup = record_import(actor, source, plan, checked, label, imported_from)
            # Last: should it fail, the row is undone, and the directory removed under its new name.
            spool = backup_runs.spool_dir(backup)
            os.rename(staging, spool)
            staging = spool
    except BaseException:
        discard(staging)
        raise
    if enqueue:
        transaction.on_commit(lambda: enqueue_import(backup))
    return backup


def record_import(
    actor: audit.Actor,
    source: Source,
    plan: BackupPlan,
    checked: dumps.CheckedDump,
    label: str,
    imported_from: str,
) -> Backup:
    """The queued backup and its audit event (the caller's transaction)."""
    user, now = audit.user_of(actor), timezone.now()
    backup = Backup.objects.create(
        source=source,
        plan=plan,
        label=label.strip(),
        trigger=Backup.IMPORT,
        triggered_by=user,
        imported_by=user,
        imported_from=imported_from[:300],
        imported_format=checked.description[:200],
        format=checked.format,
        compression=plan.compression,
        compression_level=plan.effective_compression_level(),
        encrypted=plan.encrypt,
        table_counts=checked.table_counts or {},
        server_version=checked.server_version[:100],
        tool_version=checked.tool_version[:200],
        created_at=now,
    )
    for note in checked.notes:
        backup.append_log(note)
    Backup.objects.filter(pk=backup.pk).update(log=backup.log)
    audit.record(
        actor,
        "backup.import",
        backup,
        {
            "plan": plan.name,
            "label": backup.label,
            "from": backup.imported_from,
            "format": backup.imported_format,
            "bytes": checked.size,
        },
    )
    return backup


def enqueue_import(backup: Backup) -> None:
    """To this host's own queue: the file is on its disk."""
    queues.enqueue_on_host(settings.HOST_NAME, "catalog.tasks.run_backup", backup.pk, task_name=f"import-{backup.pk}")
