"""The restore app's part of the OpenAPI document (restore/api_views.py),
which the catalog's document takes from catalog.registry (registered in
restore/apps.py); the enums come from the model, so that they cannot drift."""

from typing import Any

from catalog.api.openapi import (
    BYTES,
    ID,
    TEXT,
    URL,
    WHEN,
    choices,
    json_content,
    nullable,
    obj,
    page_parameters,
    query,
    ref,
    responses,
)
from restore.api_views import MAX_TABLES, OWNERS
from restore.models import RestoreJob

TARGET = choices(RestoreJob.TARGET_CHOICES)
MODE = choices(RestoreJob.MODE_CHOICES)
STATUS = choices(RestoreJob.STATUS_CHOICES)
NAMED = obj({"id": ID, "name": TEXT})
OWNERS_CHOICE = {
    "type": "string",
    "enum": list(OWNERS),
    "description": "keep: owners and grants as in the backup (its roles must exist on the server); "
    "without: everything belongs to the restoring role, no grants (not for plain SQL dumps); "
    "create: roles the server lacks are first created from the backup's globals (no password, never superuser)",
}

# What was asked, in a plan and in a restore alike.
CHOICES = {
    "backup": ID,
    "source": NAMED,
    "target": TARGET,
    "restore_server": {**nullable(NAMED), "description": "null: the source's own server"},
    "database": {**TEXT, "description": "the database (a SQLite backup: the file) restored into"},
    "tables": {"type": "array", "items": TEXT, "description": "schema.table names; empty: everything"},
    "mode": MODE,
    "owners": OWNERS_CHOICE,
    "terminate_connections": {"type": "boolean"},
    "plan": {**TEXT, "description": "what the restore does, in words, as the wizard's review says it"},
}

STEP = {
    "type": "object",
    "properties": {
        "name": {**TEXT, "description": "checks, safety backup, roles, fetch, verify and restore, apply, post-checks"},
        "status": {"type": "string", "enum": ["running", "done", "failed"]},
        "started_at": {**TEXT, "description": "ISO 8601"},
        "seconds": {"type": "number"},
        "detail": {**TEXT, "description": "what the step found or did, or why it failed"},
    },
    "required": ["name", "status", "started_at"],
}

SCHEMAS: dict[str, dict[str, Any]] = {
    "StartRestore": obj(
        {
            "backup": {**ID, "description": "the backup to restore (GET /backups)"},
            "target": {
                **TARGET,
                "default": "new",
                "description": "new: a new database (never one that exists); existing: the source's own database",
            },
            "restore_server": {
                **nullable(ID),
                "description": "a registered restore server for a new database; left out or null: the source's own",
            },
            "database": {
                **TEXT,
                "description": "the new database's name; left out: a name that is free there, as the wizard "
                "suggests it. For the existing database, the source's own (the default)",
            },
            "tables": {
                "type": "array",
                "items": TEXT,
                "maxItems": MAX_TABLES,
                "description": "schema.table names to restore (their partitions come with them); "
                "left out or empty: everything",
            },
            "mode": {
                **MODE,
                "default": "preview",
                "description": "preview changes nothing: into the existing database it restores into a scratch "
                "database and compares, table by table (queued, 202); into a new database it answers the plan "
                "(200), as dry_run. merge adds the rows the existing database lacks; full replaces it (or its "
                "chosen tables), or fills a new database",
            },
            "confirm_database": {
                **TEXT,
                "description": "the existing database's name, repeated: required to merge into it or replace it",
            },
            "owners": {**OWNERS_CHOICE, "default": "keep"},
            "terminate_connections": {
                "type": "boolean",
                "default": False,
                "description": "a whole-database replace ends the sessions still open on it (else it refuses)",
            },
            "dry_run": {
                "type": "boolean",
                "default": False,
                "description": "answer the plan after every check a run makes (200); start nothing",
            },
        },
        required=["backup"],
        closed=True,
    ),
    "RestorePlan": obj(
        {
            "started": {"type": "boolean", "enum": [False]},
            **CHOICES,
            "action": {**TEXT, "description": "the wizard's button: what running it does, in a few words"},
            "changes_existing_database": {"type": "boolean"},
            "safety_backup": {"type": "boolean", "description": "whether a safety backup is taken first"},
            "confirm_database": {
                **nullable(TEXT),
                "description": "the name to repeat in confirm_database to run it; null when none is needed",
            },
            "roles_missing": {
                **nullable({"type": "array", "items": TEXT}),
                "description": "the backup's roles the target server lacks (created first with owners: create); "
                "null when the server could not be asked",
            },
        }
    ),
    "Restore": obj(
        {
            "id": ID,
            **CHOICES,
            "status": STATUS,
            "cancel_requested": {"type": "boolean"},
            "current_step": {**TEXT, "description": "the step running now; empty when none is"},
            "steps": {"type": "array", "items": STEP, "description": "each step as it goes, with its timing"},
            "safety_backup": {**nullable(ID), "description": "the backup taken (and pinned) before the change"},
            "summary": {**TEXT, "description": "the outcome in words"},
            "report": {
                "type": "object",
                "description": "what the restore page shows: row_counts (backup vs restored per table), tables "
                "(a preview's comparison), inserted (a merge's rows per table), roles_created, "
                "previous_database_kept_as, warnings, total_seconds, within_rto…",
            },
            "created_at": WHEN,
            "started_at": nullable(WHEN),
            "finished_at": nullable(WHEN),
            "duration_seconds": nullable({"type": "number"}),
            "links": obj({"self": URL, "page": URL}),
        }
    ),
    "RestorePage": obj(
        {
            "count": {**BYTES, "description": "restores matching the filters, on all pages"},
            "limit": ID,
            "offset": BYTES,
            "next": nullable(URL),
            "previous": nullable(URL),
            "results": {"type": "array", "items": ref("Restore")},
        }
    ),
}

REFUSED = (
    "The wizard's refusals: no stored copy, a table the backup lacks, a database that exists (new) or is gone "
    "(existing), the name not repeated in confirm_database, roles the server lacks, an unreachable or older "
    "server…; nothing was started"
)


def start_responses() -> dict[str, Any]:
    answers = responses(202, ref("Restore"), "Queued; poll the Location (links.self) for its steps and outcome", 400)
    answers["200"] = {
        "description": "The plan (mode preview into a new database, or dry_run): nothing was started",
        "content": json_content(ref("RestorePlan")),
    }
    answers["404"] = {"description": "No such backup or restore server", "content": json_content(ref("Error"))}
    answers["409"] = {"description": REFUSED, "content": json_content(ref("Error"))}
    return answers


PATHS: dict[str, dict[str, Any]] = {
    "/restores": {
        "get": {
            "operationId": "listRestores",
            "summary": "Restores of backups, newest first, filtered and paginated.",
            "x-scope": "read",
            "parameters": [
                query("source", ID, "only restores of this source's backups (id)"),
                query("backup", ID, "only restores of this backup (id)"),
                query("status", STATUS, "only restores with this status"),
                *page_parameters("restores"),
            ],
            "responses": responses(200, ref("RestorePage"), "One page of restores", 400),
        },
        "post": {
            "operationId": "startRestore",
            "summary": "Restore a backup as the restore wizard does: into a new database by default; preview "
            "(the default mode) changes nothing; changing the existing database needs its name in "
            "confirm_database and takes a safety backup first.",
            "x-scope": "restore",
            "requestBody": {"required": True, "content": json_content(ref("StartRestore"))},
            "responses": start_responses(),
        },
    },
    "/restores/{id}": {
        "get": {
            "operationId": "getRestore",
            "summary": "A restore's progress (its steps), outcome and report.",
            "x-scope": "read",
            "parameters": [
                {"name": "id", "in": "path", "required": True, "schema": ID, "description": "the restore's id"}
            ],
            "responses": responses(200, ref("Restore"), "The restore", 404),
        }
    },
}
