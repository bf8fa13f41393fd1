"""Log lines as JSON (LOG_FORMAT=json), one object a line, for a log
collector: the time, level, logger and message, the host and process, and,
while a worker runs a job, which job and which source it is for, so that one
job's lines can be found among several hosts' (catalog/jobs.py sets them).

Imported by the logging configuration (settings.LOGGING) before Django's
apps are ready: it must not import models."""

import json
import logging
import os
from collections.abc import Mapping
from contextvars import ContextVar
from datetime import UTC, datetime
from typing import Any

from django.conf import settings

# {"job": "backup-12", "source": 3} while a job runs in this thread of this
# process: set when a worker claims the job, emptied when it records its end.
job_context: ContextVar[Mapping[str, Any] | None] = ContextVar("job_context", default=None)


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
            "host": settings.HOST_NAME,  # STRONGROOM_HOST, as the heartbeats and jobs name it
            "pid": os.getpid(),
            **(job_context.get() or {}),
        }
        if record.exc_info:
            line["exception"] = self.formatException(record.exc_info)
        return json.dumps(line, default=str, ensure_ascii=False)
