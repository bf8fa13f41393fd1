"""Writing and checking audit events. Callers run `record` inside the
transaction of the change.

The trail is a hash chain: each event stores the hash of the event before it
(by id) and hash = SHA-256(prev_hash ‖ canonical content). Editing a row
breaks its own hash, deleting one leaves its successor pointing at nothing,
and swapping two rows puts a successor before its predecessor, so
`verify_chain` finds and names the first broken link."""

import contextvars
import functools
import hashlib
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC
from typing import Any

from django.contrib.auth.base_user import AbstractBaseUser
from django.contrib.auth.models import AnonymousUser, User
from django.db import models, transaction
from django.utils import timezone
from django.utils.ipv6 import clean_ipv6_address

from catalog import dblocks
from catalog.models import AuditEvent

# Field names whose values are never written to an audit event.
SECRET_FIELDS = {
    "password",
    "dsn",
    "secret_access_key",
    "secret_token",
    "token",
    # Other destination kinds' secrets (Destination.SECRET_NAMES) and the Apprise URL.
    "account_key",
    "sas_token",
    "service_account_json",
    "private_key",
    "private_key_passphrase",
    "apprise_url",
}

# The prev_hash of the very first event.
GENESIS = "0" * 64

# pg_advisory_xact_lock key that serializes appends to the chain
# (any constant works as long as nothing else in the database uses it).
APPEND_LOCK = 0x5354524F4E47  # "STRONG"

# The fields the hash covers, in the order exports list them.
HASHED_FIELDS = ["created_at", "actor_label", "ip", "action", "object_type", "object_id", "object_repr", "changes"]

# The client address of the request being served; None in workers and
# management commands. Set by catalog.middleware.AuditRequestIP.
current_ip: contextvars.ContextVar[str | None] = contextvars.ContextVar("audit_current_ip", default=None)

# Who did it: a user (request.user), or a string naming a system actor
# ("scheduler", "worker"); None is the system.
Actor = AbstractBaseUser | AnonymousUser | str | None


def user_of(actor: Actor) -> User | None:
    """The user an actor is, for a job's triggered_by / requested_by; None
    for a system actor (and for an anonymous one, which sign-in keeps out)."""
    return actor if isinstance(actor, User) else None


def actor_fields(actor: Actor) -> dict[str, Any]:
    """An actor is a User, or a string naming a system actor ("scheduler")."""
    if actor is None:
        return {"actor": None, "actor_label": "system"}
    if isinstance(actor, str):
        return {"actor": None, "actor_label": actor}
    return {"actor": actor, "actor_label": actor.get_username()}


def describe_changes(instance: models.Model, fields: Iterable[str]) -> dict[str, object]:
    """{field: new value} for the changed fields, secrets reduced to "changed"."""
    changes: dict[str, object] = {}
    for name in fields:
        if name in SECRET_FIELDS:
            changes[name] = "changed"
            continue
        value: Any = getattr(instance, name, None)
        if hasattr(value, "all"):  # many-to-many
            value = sorted(str(item) for item in value.all())
        elif hasattr(value, "pk"):
            value = str(value)
        changes[name] = value if isinstance(value, (int, float, bool, type(None), list)) else str(value)
    return changes


# --- the hash ------------------------------------------------------------------


def normalize_ip(ip: str | None) -> str | None:
    """The form the database gives back, so the hash computed before the insert
    matches the one recomputed from the row."""
    if not ip:
        return None
    return clean_ipv6_address(ip) if ":" in ip else ip


def _stable(value: Any) -> Any:
    """JSON as the database hands it back: a float with an integral value may
    come back as an integer (PostgreSQL jsonb prints 1e20 in full), so the
    canonical form writes such floats as integers."""
    if isinstance(value, dict):
        return {str(key): _stable(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_stable(item) for item in value]
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value


def canonical_content(fields: Mapping[str, Any]) -> str:
    """Compact, sorted-keys JSON of what the hash covers. `fields` is a dict
    (or a row from `values()`) with the HASHED_FIELDS."""
    content = {
        "actor_label": fields["actor_label"],
        "action": fields["action"],
        "object_type": fields["object_type"],
        "object_id": fields["object_id"],
        "object_repr": fields["object_repr"],
        "created_at": fields["created_at"].astimezone(UTC).isoformat(timespec="microseconds"),
        "ip": fields["ip"] or None,
        "changes": _stable(fields["changes"] or {}),
    }
    return json.dumps(content, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def chain_hash(prev_hash: str, fields: Mapping[str, Any]) -> str:
    return hashlib.sha256((prev_hash + canonical_content(fields)).encode()).hexdigest()


def last_hash() -> str:
    return AuditEvent.objects.order_by("-id").values_list("hash", flat=True).first() or GENESIS


def lock_chain() -> None:
    """Concurrent writers must not both read the same last hash and fork the
    chain: each waits until the one before has committed its event."""
    dblocks.hold_until_commit(APPEND_LOCK)


def object_type_label(model_name: str) -> str:
    """What the pages call an event's object type: the model's verbose name
    ("backup plan"), not the stored model name ("backupplan")."""
    return verbose_model_names().get(model_name, model_name)


@functools.cache
def verbose_model_names() -> dict[str | None, str]:
    from django.apps import apps

    return {model._meta.model_name: str(model._meta.verbose_name) for model in apps.get_models()}


def record(
    actor: Actor, action: str, obj: models.Model | None = None, changes: Mapping[str, Any] | None = None
) -> AuditEvent:
    event = AuditEvent(
        action=action,
        object_type=(obj._meta.model_name or "") if obj is not None else "",
        object_id=str(obj.pk) if obj is not None else "",
        object_repr=str(obj)[:200] if obj is not None else "",
        # Stored as it will be read back (JSON round trip), so the hash matches.
        changes=json.loads(json.dumps(changes or {}, default=str)),
        ip=normalize_ip(current_ip.get()),
        **actor_fields(actor),
    )
    # No savepoint of its own: if the event cannot be written, the change it
    # records must not commit either.
    with transaction.atomic(savepoint=False):
        lock_chain()
        # Timestamped once it holds the lock, so time follows the chain's order.
        event.created_at = timezone.now()
        event.prev_hash = last_hash()
        event.hash = chain_hash(event.prev_hash, event.hashed_fields())
        event.save()
    return event


# --- checking the chain -----------------------------------------------------------


@dataclass
class ChainCheck:
    """The outcome of `verify_chain`: how many events were read, and the first
    broken link if any (`broken_id` the event where the chain breaks)."""

    count: int = 0
    last_id: int | None = None
    head: str = GENESIS
    broken_id: int | None = None
    problem: str = ""  # "edited", "deleted" or "reordered"
    message: str = ""

    @property
    def intact(self) -> bool:
        return self.broken_id is None

    def summary(self) -> str:
        if self.intact:
            return f"{self.count} event{'' if self.count == 1 else 's'}, chain intact"
        return self.message


def _describe(row: Mapping[str, Any]) -> str:
    return f"{row['actor_label']} {row['action']} {row['object_repr']}".strip()


def verify_chain(chunk_size: int = 2000) -> ChainCheck:
    """Walk the whole trail in id order with bounded memory and stop at the
    first broken link."""
    result = ChainCheck()
    expected_prev = GENESIS
    rows = AuditEvent.objects.order_by("id").values("id", "prev_hash", "hash", *HASHED_FIELDS)
    for row in rows.iterator(chunk_size=chunk_size):
        result.count += 1
        if chain_hash(row["prev_hash"], row) != row["hash"]:
            message = f"event #{row['id']} ({_describe(row)}) does not match its hash: edited"
            return _broken(result, row["id"], "edited", message)
        if row["prev_hash"] != expected_prev:
            return _broken_link(result, row)
        expected_prev = row["hash"]
        result.last_id = row["id"]
    result.head = expected_prev
    return result


def _broken(result: ChainCheck, event_id: int, problem: str, message: str) -> ChainCheck:
    result.broken_id, result.problem, result.message = event_id, problem, message
    return result


def _broken_link(result: ChainCheck, row: Mapping[str, Any]) -> ChainCheck:
    """The event is intact but does not follow the one before it: find the
    event it claims to follow (one lookup, only when the chain is broken)."""
    claimed = AuditEvent.objects.filter(hash=row["prev_hash"]).values_list("id", flat=True).first()
    if claimed is None:
        return _broken(result, row["id"], "deleted", f"the event before #{row['id']} is missing: deleted")
    if claimed > row["id"]:
        return _broken(
            result, row["id"], "reordered", f"events #{row['id']} and #{claimed} are out of order: reordered"
        )
    return _broken(
        result,
        row["id"],
        "reordered",
        f"event #{row['id']} follows #{claimed}, not #{result.last_id}: rows reordered or inserted",
    )


def export_row(event: AuditEvent) -> dict[str, Any]:
    """What an outside party needs to re-verify an event: id, the hashed
    content exactly as hashed, prev_hash and hash."""
    row = json.loads(canonical_content(event.hashed_fields()))
    hashed = {name: row[name] for name in HASHED_FIELDS}
    return {"id": event.pk, **hashed, "prev_hash": event.prev_hash, "hash": event.hash}
