"""What /readyz answers a load balancer or an orchestrator: whether this
Strongroom can do its work now, check by check, each in words. /healthz only
says the web process answers. The answer is public, so it names no host,
path or error text; the log has those."""

import logging
import shutil
from datetime import datetime
from typing import Any, TypedDict

from django.conf import settings
from django.db import DatabaseError, connection
from django.utils import timezone
from django_q.brokers import get_broker

from catalog import queues
from catalog.text import size_text

log = logging.getLogger(__name__)

# Below this, a backup spooling to the data directory would soon fail.
MIN_FREE_BYTES = 1 << 30


class Check(TypedDict):
    ok: bool
    detail: str


def checks(now: datetime | None = None) -> dict[str, Check]:
    return {
        "database": metadata_database(),
        "broker": broker(),
        "workers": workers(now),
        "monitor": monitor(now),
        "disk": data_directory_space(),
    }


def metadata_database() -> Check:
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1")
    except DatabaseError:
        log.exception("Readiness: the metadata database does not answer")
        return {"ok": False, "detail": "the metadata database does not answer"}
    return {"ok": True, "detail": f"the metadata database ({connection.vendor}) answers"}


def broker() -> Check:
    """The task queue's broker: Redis when REDIS_URL is set, else the metadata database."""
    kind = "Redis" if settings.REDIS_URL else "the metadata database"
    try:
        get_broker().ping()
    except Exception:  # the broker's client raises errors of its own
        log.exception("Readiness: the task queue's broker does not answer")
        return {"ok": False, "detail": f"the task queue's broker ({kind}) does not answer"}
    return {"ok": True, "detail": f"the task queue's broker ({kind}) answers"}


def workers(now: datetime | None = None) -> Check:
    """A work cluster on some host has said it is alive lately (catalog/brokers.py)."""
    try:
        hosts = queues.work_hosts(now)
        last = queues.last_work_heartbeat() if not hosts else None
    except DatabaseError:
        return {"ok": False, "detail": "cannot tell: the metadata database does not answer"}
    if hosts:
        count = len(hosts)
        return {"ok": True, "detail": f"task workers are running on {count} host{'s' if count != 1 else ''}"}
    if last is None:
        return {"ok": False, "detail": "no task workers have ever run: nothing takes backups"}
    return {
        "ok": False,
        "detail": f"no task workers since {last:%Y-%m-%d %H:%M} UTC: nothing takes backups",
    }


def monitor(now: datetime | None = None) -> Check:
    try:
        silent = queues.monitor_silent_since(now)
    except DatabaseError:
        return {"ok": False, "detail": "cannot tell: the metadata database does not answer"}
    if silent is not None:
        return {
            "ok": False,
            "detail": f"the one-minute tick was due at {silent:%Y-%m-%d %H:%M} UTC and has not run: "
            "the monitoring workers are not running",
        }
    return {"ok": True, "detail": "the one-minute tick runs on time"}


def data_directory_space() -> Check:
    free = shutil.disk_usage(settings.DATA_DIR).free
    detail = f"{size_text(free)} free in the data directory"
    if free < MIN_FREE_BYTES:
        return {"ok": False, "detail": f"only {detail}; spools and local copies need room"}
    return {"ok": True, "detail": detail}


def report(now: datetime | None = None) -> dict[str, Any]:
    found = checks(now)
    ready = all(check["ok"] for check in found.values())
    return {"ready": ready, "at": (now or timezone.now()).isoformat(), "checks": found}
