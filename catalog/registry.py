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

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

# Run by catalog.tasks.tick after the catalog's own sweeps and before the
# monitoring checks (so that jobs swept as dead count as failed there): name ->
# function(); its result is the tick's result under that name. An app wraps a
# step in catalog.alerts.hooks.quietly when its failure must not stop the tick.
tick_steps: dict[str, Callable[[], Any]] = {}

# Run by catalog.tasks.prune_nightly after every plan's retention: name ->
# function(); a result that is not empty is reported under that name.
nightly_steps: dict[str, Callable[[], Any]] = {}

# Run by catalog.alerts.hooks.periodic_checks after the catalog's own checks,
# each on its own (a failure is logged and the others still run): name ->
# check(now); its result is reported under that name.
periodic_checks: dict[str, Callable[[Any], Any]] = {}

# Jobs of other apps that the queue metrics count: name -> model (with QUEUED
# and RUNNING statuses and a status field).
queued_jobs: dict[str, Any] = {}

# Task entry points that moved out of catalog.tasks: tasks queued before an
# upgrade still name the old dotted path, which passes them on (name -> function).
moved_tasks: dict[str, Callable[..., Any]] = {}


def no_problem(source: Any) -> str:
    return ""


def nothing_missing(backup: Any) -> list[str]:
    return []


def nothing_to_record(backup: Any, wal: Any) -> None:
    return None


@dataclass(frozen=True)
class FormatSteps:
    """What a backup format needs beyond the stream, registered by the app that
    owns it (pitr registers the physical base backup's). The defaults do nothing."""

    # Why a backup of this format cannot start now ("" when it can): a Refused.
    run_problem: Callable[[Any], str] = no_problem
    # Once the backup's copies are durable: record what the stream reported (backup.wal).
    copies_durable: Callable[[Any, Any], None] = nothing_to_record
    # What the backup still waits for before it is good (WAL segment names), to name on its page.
    waiting_for: Callable[[Any], list[str]] = nothing_missing
    # A catalog rebuild imported the backup from its manifest: import the manifest's "wal" part.
    imported: Callable[[Any, Any], None] = nothing_to_record


NO_STEPS = FormatSteps()

format_steps: dict[str, FormatSteps] = {}


def steps_of(backup_format: str) -> FormatSteps:
    """The steps registered for a backup format, or steps that do nothing."""
    return format_steps.get(backup_format, NO_STEPS)
