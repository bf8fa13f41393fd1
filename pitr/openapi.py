"""The pitr app's part of the OpenAPI document (pitr/api_views.py), which the
catalog's document takes from catalog.registry (registered in pitr/apps.py);
the enums come from the model, so that they cannot drift."""

from typing import Any

from catalog.api.openapi import ID, TEXT, URL, WHEN, choices, json_content, nullable, obj, ref, responses
from pitr.models import PitrRestore

TARGET = choices(PitrRestore.TARGET_CHOICES)

SCHEMAS: dict[str, dict[str, Any]] = {
    "StartPitrRestore": obj(
        {
            "target": {**TARGET, "default": "time", "description": "a moment, the latest possible, or a named point"},
            "target_time": {**WHEN, "description": "the moment to go back to (required when target is time)"},
            "restore_point": {**TEXT, "maxLength": 64, "description": "the restore point's name"},
            "data_directory": {
                **TEXT,
                "minLength": 1,
                "maxLength": 1000,
                "description": "a new or empty directory under PITR_RESTORE_ROOT on the chosen host",
            },
            "port": {"type": "integer", "minimum": 1024, "maximum": 65535, "description": "a free port there"},
            "host": {
                **TEXT,
                "maxLength": 64,
                "description": "the host to restore on (see GET /hosts); default: the host answering",
            },
        },
        required=["data_directory", "port"],
        closed=True,
    ),
    "PitrRestore": obj(
        {
            "id": ID,
            "source": ID,
            "kind": {"type": "string", "enum": ["restore", "drill"]},
            "status": choices(PitrRestore.STATUS_CHOICES),
            "phase": TEXT,
            "host": {**TEXT, "description": "where the data directory is and the restored server runs"},
            "target": TARGET,
            "target_time": nullable(WHEN),
            "restore_point": TEXT,
            "data_directory": TEXT,
            "port": nullable({"type": "integer"}),
            "recovered_to": nullable(WHEN),
            "summary": TEXT,
            "created_at": WHEN,
            "started_at": nullable(WHEN),
            "finished_at": nullable(WHEN),
            "connect": {**TEXT, "description": "a psql command line while the restored server runs"},
            "links": obj({"page": URL}),
        }
    ),
}

PATHS: dict[str, dict[str, Any]] = {
    "/sources/{id}/pitr-restores": {
        "post": {
            "operationId": "startPitrRestore",
            "summary": "Restore a source under continuous protection to a point in time, on a chosen host.",
            "x-scope": "restore",
            "parameters": [
                {
                    "name": "id",
                    "in": "path",
                    "required": True,
                    "schema": ID,
                    "description": "the source's id; its continuous protection must be on",
                }
            ],
            "requestBody": {"required": True, "content": json_content(ref("StartPitrRestore"))},
            "responses": responses(202, ref("PitrRestore"), "Queued on the chosen host", 400, 404, 409),
        }
    },
    "/pitr-restores/{id}": {
        "get": {
            "operationId": "getPitrRestore",
            "summary": "A point-in-time restore's progress and outcome.",
            "x-scope": "read",
            "parameters": [
                {"name": "id", "in": "path", "required": True, "schema": ID, "description": "the restore's id"}
            ],
            "responses": responses(200, ref("PitrRestore"), "The restore", 404),
        }
    },
}
