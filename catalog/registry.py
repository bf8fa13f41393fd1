"""Where the apps above the catalog plug into it.

The catalog is the ground floor: it imports nothing from restore, pitr, drills
or compliance (an import-linter contract in pyproject.toml keeps it so). Where
the catalog has to reach something of theirs (a step of the one-minute tick or
of the nightly prune, a monitoring check, a step of a backup format, a count
for the metrics), the upper app registers it here in its AppConfig.ready(),
and the catalog calls whatever is registered. See docs/ARCHITECTURE.md.

Each registry maps a name to what is registered, in the order registered (the
order of INSTALLED_APPS); registering a name again replaces the entry, so that
ready() may run twice."""

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # catalog.models imports this module (Backup.wal_waiting_for)
    from catalog.models import Backup, Source

# What each registry holds. A step's or a check's result is only stored and
# reported, never read: any value will do (Any for a check, whose result goes
# into the monitoring's report beside the catalog's own checks').
TickStep = Callable[[], object]
NightlyStep = Callable[[], object]
PeriodicCheck = Callable[[datetime | None], Any]  # check(now); None: now
MovedTask = Callable[..., object]  # the task's own arguments, as queued
# A job model of another app (restore's RestoreJob): a class with QUEUED and
# RUNNING statuses and a status field, which the catalog cannot name.
JobModel = Any
# FormatSteps: why a backup of the source cannot start ("" when it can); the
# backup's copies are durable (with what the stream reported, opaque here); the
# WAL segment names it still waits for; its manifest's "wal" part was imported.
RunProblem = Callable[["Source"], str | None]  # why a backup may not start now; empty or None when it may
CopiesDurable = Callable[["Backup", Any], object]  # what it returns is not used
WaitingFor = Callable[["Backup"], list[str]]
Imported = Callable[["Backup", Mapping[str, Any]], None]

# Run by catalog.tasks.tick after the catalog's own sweeps and before the
# monitoring checks (so that jobs swept as dead count as failed there): name ->
# function(); its result is the tick's result under that name. An app wraps a
# step in catalog.alerts.hooks.quietly when its failure must not stop the tick.
tick_steps: dict[str, TickStep] = {}

# Run by catalog.tasks.prune_nightly after every plan's retention: name ->
# function(); a result that is not empty is reported under that name.
nightly_steps: dict[str, NightlyStep] = {}

# Run by catalog.alerts.hooks.periodic_checks after the catalog's own checks,
# each on its own (a failure is logged and the others still run): name ->
# check(now); its result is reported under that name.
periodic_checks: dict[str, PeriodicCheck] = {}

# Jobs of other apps that the queue metrics count: name -> model (with QUEUED
# and RUNNING statuses and a status field).
queued_jobs: dict[str, JobModel] = {}

# Task entry points that moved out of catalog.tasks: tasks queued before an
# upgrade still name the old dotted path, which passes them on (name -> function).
moved_tasks: dict[str, MovedTask] = {}

# The API endpoints other apps serve under /api/v1/, for the OpenAPI document
# (catalog/api/openapi.py): path -> {method: operation}, and the schemas those
# operations name (name -> JSON schema).
api_paths: dict[str, dict[str, Any]] = {}
api_schemas: dict[str, dict[str, Any]] = {}


def no_problem(source: "Source") -> str:
    return ""


def nothing_missing(backup: "Backup") -> list[str]:
    return []


def nothing_to_record(backup: "Backup", wal: Any) -> None:
    return None


@dataclass(frozen=True)
class FormatSteps:
    """What a backup format needs beyond the stream, registered by the app that
    owns it (pitr registers the physical base backup's). The defaults do nothing."""

    # Why a backup of this format cannot start now ("" when it can): a Refused.
    run_problem: RunProblem = no_problem
    # Once the backup's copies are durable: record what the stream reported (backup.wal).
    copies_durable: CopiesDurable = nothing_to_record
    # What the backup still waits for before it is good (WAL segment names), to name on its page.
    waiting_for: WaitingFor = nothing_missing
    # A catalog rebuild imported the backup from its manifest: import the manifest's "wal" part.
    imported: Imported = nothing_to_record


NO_STEPS = FormatSteps()

format_steps: dict[str, FormatSteps] = {}


def steps_of(backup_format: str) -> FormatSteps:
    """The steps registered for a backup format, or steps that do nothing."""
    return format_steps.get(backup_format, NO_STEPS)
