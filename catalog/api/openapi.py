"""The OpenAPI 3.1 document served at /api/v1/openapi.json.

Written by hand beside catalog.api.serialize, whose dicts it describes; the
enums come from the models so that they cannot drift. The schemathesis test
in tests/catalog/api checks every response against it."""

from collections.abc import Iterable
from typing import Any

from catalog import registry
from catalog.alerts.models import Alert
from catalog.models import FORMAT_CHOICES, HEALTH_CHOICES, Backup, Copy, Destination, Verification


def ref(name: str) -> dict[str, Any]:
    return {"$ref": f"#/components/schemas/{name}"}


def nullable(schema: dict[str, Any]) -> dict[str, Any]:
    if "$ref" in schema:
        return {"anyOf": [schema, {"type": "null"}]}
    return {**schema, "type": [schema["type"], "null"]}


def obj(properties: dict[str, Any], required: list[str] | None = None, closed: bool = False) -> dict[str, Any]:
    schema = {
        "type": "object",
        "properties": properties,
        "required": list(properties) if required is None else required,
    }
    return {**schema, "additionalProperties": False} if closed else schema


def choices(pairs: Iterable[tuple[str, object]]) -> dict[str, Any]:
    return {"type": "string", "enum": [value for value, _ in pairs]}


ID = {"type": "integer", "minimum": 1, "maximum": 2**63 - 1}
TEXT = {"type": "string"}
WHEN = {"type": "string", "format": "date-time"}
BYTES = {"type": "integer", "minimum": 0}
URL = {"type": "string", "format": "uri"}
BACKUP_STATUS = choices(Backup.STATUS_CHOICES)

SCHEMAS = {
    "Error": {
        **obj({"error": {"type": "string", "description": "what went wrong, in words"}}),
        "example": {"error": "This API token was revoked at 2026-01-31 03:00 UTC."},
    },
    "BackupSummary": obj({"id": ID, "status": BACKUP_STATUS, "created_at": WHEN, "finished_at": nullable(WHEN)}),
    "VerificationSummary": obj(
        {
            "id": ID,
            "kind": choices(Verification.KIND_CHOICES),
            "status": choices(Verification.STATUS_CHOICES),
            "finished_at": nullable(WHEN),
        }
    ),
    "SourceHealth": obj(
        {
            "id": ID,
            "name": TEXT,
            "status": choices(HEALTH_CHOICES),
            "status_since": nullable(WHEN),
            "reason": {**TEXT, "description": "why the source has this status"},
            "paused": {"type": "boolean"},
            "last_good_backup_at": nullable(WHEN),
            "late_at": {**nullable(WHEN), "description": "when the source turns late without a new good backup"},
            "down_at": {**nullable(WHEN), "description": "when the source turns down: its RPO is breached"},
            "rpo_minutes": nullable({"type": "integer"}),
            "rto_minutes": nullable({"type": "integer"}),
            "last_backup": nullable(ref("BackupSummary")),
            "last_verification": nullable(ref("VerificationSummary")),
        }
    ),
    "DestinationUsage": obj(
        {
            "id": ID,
            "name": TEXT,
            "kind": choices(Destination.KIND_CHOICES),
            "offsite": {"type": "boolean"},
            "used_bytes": BYTES,
            "quota_bytes": nullable(BYTES),
            "share": {**nullable({"type": "number"}), "description": "used bytes as a share of the quota (0.8 = 80 %)"},
        }
    ),
    "OpenAlert": obj(
        {
            "id": ID,
            "kind": choices(Alert.KIND_CHOICES),
            "severity": choices(Alert.SEVERITY_CHOICES),
            "title": TEXT,
            "detail": TEXT,
            "source": nullable(ref("Named")),
            "opened_at": WHEN,
            "url": {**nullable(URL), "description": "the page that shows the problem"},
        }
    ),
    "Status": obj(
        {
            "status": {
                **choices([("up", ""), ("late", ""), ("failing", ""), ("down", "")]),
                "description": "the worst status of the unpaused sources; up when all are up or new",
            },
            "checked_at": WHEN,
            "open_alerts": {"type": "array", "items": ref("OpenAlert")},
            "sources": {"type": "array", "items": ref("SourceHealth")},
            "destinations": {"type": "array", "items": ref("DestinationUsage")},
        }
    ),
    "Named": obj({"id": ID, "name": TEXT}),
    "BackupLinks": obj(
        {"self": {**URL, "description": "this backup in the API"}, "page": {**URL, "description": "this backup's page"}}
    ),
    "Backup": obj(
        {
            "id": ID,
            "source": ref("Named"),
            "plan": nullable(ref("Named")),
            "status": BACKUP_STATUS,
            "label": TEXT,
            "trigger": choices(Backup.TRIGGER_CHOICES),
            "format": {
                **TEXT,
                # Described rather than an enum: a backup keeps the format it was taken in.
                "description": "how it was dumped: " + "; ".join(f"{fmt}: {label}" for fmt, label in FORMAT_CHOICES),
            },
            "compression": TEXT,
            "compression_level": {
                **nullable({"type": "integer", "minimum": 1}),
                "description": "the level it was compressed at; null when not compressed or not recorded",
            },
            "encrypted": {"type": "boolean"},
            "created_at": WHEN,
            "started_at": nullable(WHEN),
            "finished_at": nullable(WHEN),
            "duration_seconds": nullable({"type": "number"}),
            "raw_bytes": BYTES,
            "stored_bytes": BYTES,
            "sha256": {**TEXT, "description": "SHA-256 of the stored bytes (hex); empty until known"},
            "pinned": {"type": "boolean"},
            "legal_hold": {"type": "boolean"},
            "pruned_at": nullable(WHEN),
            "error": TEXT,
            "imported": {
                **nullable(obj({"by": nullable(TEXT), "from": TEXT, "format": TEXT})),
                "description": "for a dump made elsewhere and imported: who imported it, from where, and what it was; "
                "null for a backup Strongroom took",
            },
            "links": ref("BackupLinks"),
        }
    ),
    "Copy": obj(
        {
            "id": ID,
            "destination": obj({"id": ID, "name": TEXT, "kind": choices(Destination.KIND_CHOICES)}),
            "status": choices(Copy.STATUS_CHOICES),
            "size": BYTES,
            "sha256": TEXT,
            "durable_at": nullable(WHEN),
            "verified_at": nullable(WHEN),
            "pruned_at": nullable(WHEN),
            "locked_until": nullable(WHEN),
        }
    ),
    "BackupDetail": {
        "allOf": [
            ref("Backup"),
            obj(
                {
                    "phase": TEXT,
                    "server_version": TEXT,
                    "tool_version": TEXT,
                    "table_counts": {
                        "type": "object",
                        "additionalProperties": {"type": "integer"},
                        "description": "rows per table in the backup's snapshot",
                    },
                    "hold_reason": TEXT,
                    "copies": {"type": "array", "items": ref("Copy")},
                }
            ),
        ]
    },
    "BackupPage": obj(
        {
            "count": {**BYTES, "description": "backups matching the filters, on all pages"},
            "limit": ID,
            "offset": BYTES,
            "next": nullable(URL),
            "previous": nullable(URL),
            "results": {"type": "array", "items": ref("Backup")},
        }
    ),
    "StartBackup": obj(
        {
            "plan": {**ID, "description": "the plan to run"},
            "label": {
                "type": "string",
                "maxLength": 100,
                "pattern": "^[-a-zA-Z0-9_]*$",
                "description": "optional, e.g. pre-migration-backup",
            },
            "keep_days": {
                **nullable({"type": "integer", "minimum": 1, "maximum": 36500}),
                "description": "optional: days retention keeps this backup whatever the plan's rule says; "
                "left out or null, the plan's rule for manual backups (keep_manual_days) decides",
            },
        },
        required=["plan"],
        closed=True,
    ),
    "BackupQueued": obj(
        {
            "id": ID,
            "status": BACKUP_STATUS,
            "label": TEXT,
            "trigger": {"type": "string", "enum": ["api"]},
            "url": {**URL, "description": "poll this for the outcome"},
        }
    ),
    "WalStored": obj(
        {
            "name": TEXT,
            "stored": {"type": "boolean", "enum": [True]},
            "created": {"type": "boolean", "description": "false when the file was stored before (a retried push)"},
            "sha256": {**TEXT, "description": "SHA-256 of the stored bytes (hex), when this push stored it"},
        },
        required=["name", "stored", "created"],
    ),
    "Host": obj(
        {
            "host": {**TEXT, "description": "the host's name (STRONGROOM_HOST)"},
            "queues": {"type": "array", "items": TEXT, "description": "the queues whose workers run there"},
            "last_seen": WHEN,
            "takes_host_bound_work": {
                "type": "boolean",
                "description": "its own queue's workers run: a point-in-time restore can go there",
            },
        }
    ),
    "HostList": obj({"hosts": {"type": "array", "items": {"$ref": "#/components/schemas/Host"}}}),
    "StartVerification": obj(
        {"kind": {**choices(Verification.KIND_CHOICES), "default": "checksum"}}, required=[], closed=True
    ),
    "Verification": obj(
        {
            "id": ID,
            "backup": ID,
            "kind": choices(Verification.KIND_CHOICES),
            "status": choices(Verification.STATUS_CHOICES),
            "created_at": WHEN,
            "finished_at": nullable(WHEN),
            "summary": TEXT,
            "links": obj({"page": URL}),
        }
    ),
}

PLAN_OR_SOURCE = {"oneOf": [ID, {"type": "string", "minLength": 1}]}

# The guide's endpoints (catalog/api/compat.py): every answer says "ok".
COMPAT_SCHEMAS = {
    "CompatError": obj({"ok": {"type": "boolean", "enum": [False]}, "error": {"type": "string"}}),
    "CreateBackup": obj(
        {
            "plan": {**PLAN_OR_SOURCE, "description": "the plan to run: its id or name; needed when there are several"},
            "source": {
                **PLAN_OR_SOURCE,
                "description": "a source (id or name): its only plan, or the plan named of it",
            },
            "label": SCHEMAS["StartBackup"]["properties"]["label"],
            "keep_days": SCHEMAS["StartBackup"]["properties"]["keep_days"],
        },
        required=[],
        closed=True,
    ),
    "BackupCreated": obj(
        {
            "ok": {"type": "boolean", "enum": [True]},
            "backup_id": ID,
            "status": BACKUP_STATUS,
            "label": TEXT,
            "plan": ref("Named"),
            "source": ref("Named"),
            "status_url": {**URL, "description": "GET /api/v1/backups/{id} (read scope): poll it for the outcome"},
        }
    ),
    "CronRun": obj(
        {
            "backup_id": ID,
            "status": BACKUP_STATUS,
            "trigger": choices(Backup.TRIGGER_CHOICES),
            "created_at": WHEN,
            "finished_at": nullable(WHEN),
            "error": TEXT,
        }
    ),
    "CronPlan": obj(
        {
            "id": ID,
            "name": TEXT,
            "source": ref("Named"),
            "schedule": {**TEXT, "description": "the cron expression"},
            "schedule_in_words": TEXT,
            "source_status": choices(HEALTH_CHOICES),
            "paused": {"type": "boolean", "description": "its source's monitoring is paused: never late or failing"},
            "last_run": {**nullable(ref("CronRun")), "description": "its latest backup, whatever started it"},
            "last_status": nullable(BACKUP_STATUS),
            "last_success_at": nullable(WHEN),
            "next_run": nullable(WHEN),
            "late": {
                "type": "boolean",
                "description": "its source has no good backup within its interval (late or down)",
            },
            "failing": {"type": "boolean", "description": "its latest backup that ended failed or was partial"},
        }
    ),
    "CronStatus": obj(
        {
            "ok": {"type": "boolean", "description": "no plan late or failing, and the scheduler runs"},
            "checked_at": WHEN,
            "scheduler": obj({"running": {"type": "boolean"}, "silent_since": nullable(WHEN)}),
            "problems": {"type": "array", "items": TEXT, "description": "what is wrong, in words; empty when ok"},
            "late": {**BYTES, "description": "how many plans are late"},
            "failing": {**BYTES, "description": "how many plans are failing"},
            "plans": {"type": "array", "items": ref("CronPlan"), "description": "the enabled (scheduled) plans"},
        }
    ),
}

ERRORS = {
    400: "Bad JSON or bad values; the message says which.",
    401: "No token, a malformed Authorization header, or an unknown, expired or revoked token.",
    403: "The token lacks the scope this request needs.",
    404: "No such backup (or plan, or source protected in archive mode).",
    503: "The file could not be stored in every destination; the archive_command should retry.",
    409: "The plan or backup cannot do this now (already running, no destination, no stored copy…).",
}


def json_content(schema: dict[str, Any]) -> dict[str, Any]:
    return {"application/json": {"schema": schema}}


def responses(success_code: int, success_schema: dict[str, Any], description: str, *error_codes: int) -> dict[str, Any]:
    answers = {str(success_code): {"description": description, "content": json_content(success_schema)}}
    for code in (401, 403) + error_codes:
        answers[str(code)] = {"description": ERRORS[code], "content": json_content(ref("Error"))}
    return answers


def query(name: str, schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {"name": name, "in": "query", "required": False, "schema": schema, "description": description}


def page_parameters(things: str) -> list[dict[str, Any]]:
    """limit and offset, as every listing takes them (catalog/api/views.py's paginate)."""
    return [
        query("limit", {"type": "integer", "minimum": 1, "maximum": 500, "default": 50}, "page size"),
        query(
            "offset",
            {"type": "integer", "minimum": 0, "maximum": 10**9, "default": 0},
            f"how many matching {things} to skip",
        ),
    ]


BACKUP_ID = {"name": "id", "in": "path", "required": True, "schema": ID, "description": "the backup's id"}


def wal_push(operation_id: str) -> dict[str, Any]:
    """PUT (curl -T) and POST of a WAL file by a server's archive_command (pitr/views.py)."""
    return {
        "operationId": operation_id,
        "summary": "Store a WAL segment or timeline history file pushed by the source's archive_command.",
        "x-scope": "backup",
        "parameters": [
            {
                "name": "id",
                "in": "path",
                "required": True,
                "schema": ID,
                "description": "the source's id; its continuous protection must be on, in archive mode",
            },
            {
                "name": "name",
                "in": "path",
                "required": True,
                "schema": {"type": "string", "pattern": "^([0-9A-F]{24}|[0-9A-F]{8}\\.history)$"},
                "description": "the WAL file's name (%f in archive_command), e.g. 000000010000000000000001",
            },
        ],
        "requestBody": {
            "required": True,
            "content": {"application/octet-stream": {"schema": {"type": "string", "format": "binary"}}},
        },
        "responses": {
            **responses(201, ref("WalStored"), "Stored in every WAL destination", 400, 404, 503),
            "200": {"description": "Stored before: nothing to do", "content": json_content(ref("WalStored"))},
        },
    }


PATHS = {
    "/status": {
        "get": {
            "operationId": "getStatus",
            "summary": "Are we safe? Health of every source, last backups and verifications, storage use.",
            "x-scope": "read",
            "responses": responses(200, ref("Status"), "Overall and per-source health"),
        }
    },
    "/backups": {
        "get": {
            "operationId": "listBackups",
            "summary": "Backups, newest first, filtered and paginated.",
            "x-scope": "read",
            "parameters": [
                query("source", ID, "only backups of this source (id)"),
                query("plan", ID, "only backups of this plan (id)"),
                query("status", BACKUP_STATUS, "only backups with this status"),
                query(
                    "label",
                    {"type": "string", "maxLength": 100},
                    "only backups with exactly this label (empty: only backups without one)",
                ),
                query("since", WHEN, "created at or after this moment (ISO 8601)"),
                query("until", WHEN, "created before this moment (ISO 8601)"),
                *page_parameters("backups"),
            ],
            "responses": responses(200, ref("BackupPage"), "One page of backups", 400),
        },
        "post": {
            "operationId": "startBackup",
            "summary": 'Start a backup of a plan now, with a label ("pre-migration-backup"); poll its url.',
            "x-scope": "backup",
            "requestBody": {"required": True, "content": json_content(ref("StartBackup"))},
            "responses": responses(202, ref("BackupQueued"), "Queued", 400, 404, 409),
        },
    },
    "/backups/{id}": {
        "get": {
            "operationId": "getBackup",
            "summary": "One backup with its copies, checksums and row counts.",
            "x-scope": "read",
            "parameters": [BACKUP_ID],
            "responses": responses(200, ref("BackupDetail"), "The backup", 404),
        }
    },
    "/backups/{id}/verify": {
        "post": {
            "operationId": "verifyBackup",
            "summary": "Verify a backup: a checksum of every copy (default) or a test restore.",
            "x-scope": "backup",
            "parameters": [BACKUP_ID],
            "requestBody": {"required": False, "content": json_content(ref("StartVerification"))},
            "responses": responses(202, ref("Verification"), "Queued", 400, 404, 409),
        }
    },
    "/sources/{id}/wal/{name}": {"put": wal_push("pushWalFile"), "post": wal_push("postWalFile")},
    "/hosts": {
        "get": {
            "operationId": "listHosts",
            "summary": "The hosts whose workers are running, with their queues.",
            "x-scope": "read",
            "responses": responses(200, ref("HostList"), "Hosts seen in the last minutes"),
        }
    },
}


def compat_responses(
    success_code: int, success_schema: dict[str, Any], description: str, *error_codes: int
) -> dict[str, Any]:
    """As responses(), with the guide's errors ({"ok": false, "error": ...})."""
    answers = responses(success_code, success_schema, description, *error_codes)
    for code, answer in answers.items():
        if code != str(success_code):
            answer["content"] = json_content(ref("CompatError"))
    return answers


# Served at /api (the path item's own server), beside /api/v1.
COMPAT_PATHS = {
    "/backup/create": {
        "servers": [{"url": "/api", "description": "the backup guide's endpoints, beside /api/v1"}],
        "post": {
            "operationId": "createBackupAlias",
            "summary": "Alias of POST /api/v1/backups, as the backup guide's scripts call it: start a backup of the "
            "plan named (or of the source's only plan, or of the only plan).",
            "deprecated": False,
            "x-scope": "backup",
            "x-alias-of": "POST /api/v1/backups",
            "requestBody": {"required": False, "content": json_content(ref("CreateBackup"))},
            "responses": {
                **compat_responses(202, ref("BackupCreated"), "Queued", 400, 404),
                "409": {
                    "description": "Several plans and none named, or the plan cannot start now (already running…)",
                    "content": json_content(ref("CompatError")),
                },
            },
        },
    },
    "/cron/status": {
        "servers": [{"url": "/api", "description": "the backup guide's endpoints, beside /api/v1"}],
        "get": {
            "operationId": "cronStatusAlias",
            "summary": "Alias of GET /api/v1/status by scheduled plan, as the backup guide's scripts call it: last and "
            "next run of each, and which are late or failing.",
            "deprecated": False,
            "x-scope": "read",
            "x-alias-of": "GET /api/v1/status",
            "responses": {
                **compat_responses(200, ref("CronStatus"), "Every scheduled plan runs as it should"),
                "503": {
                    "description": 'A plan is late or failing, or the scheduler stopped: "ok" is false and '
                    "problems says what (a plain HTTP monitor alerts on the status code)",
                    "content": json_content(ref("CronStatus")),
                },
            },
        },
    },
}


def openapi_document() -> dict[str, Any]:
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "Strongroom API",
            "version": "1",
            "description": (
                "Token-authenticated JSON API. Administrators create tokens on the API tokens page; send one as "
                "'Authorization: Bearer <token>'. The read scope allows GET requests (and /metrics), the backup "
                "scope starting backups and verifications, the restore scope starting restores of backups and "
                "point-in-time restores. "
                'Every error is {"error": "..."}. Two compatibility aliases answer beside /api/v1, at /api: '
                "POST /api/backup/create and GET /api/cron/status, the endpoints of the backup guide Strongroom "
                "grew from, for the scripts written from it."
            ),
        },
        "servers": [{"url": "/api/v1"}],
        "security": [{"bearerAuth": []}],
        "paths": {**PATHS, **registry.api_paths, **COMPAT_PATHS},
        "components": {
            "securitySchemes": {"bearerAuth": {"type": "http", "scheme": "bearer", "description": "an API token"}},
            "schemas": {**SCHEMAS, **COMPAT_SCHEMAS, **registry.api_schemas},
        },
    }
