"""Writing audit events. Callers run this inside the transaction of the change."""

from catalog.models import AuditEvent

# Field names whose values are never written to an audit event.
SECRET_FIELDS = {"password", "dsn", "secret_access_key", "secret_token", "token"}


def actor_fields(actor):
    """An actor is a User, or a string naming a system actor ("scheduler")."""
    if actor is None:
        return {"actor": None, "actor_label": "system"}
    if isinstance(actor, str):
        return {"actor": None, "actor_label": actor}
    return {"actor": actor, "actor_label": actor.get_username()}


def describe_changes(instance, fields):
    """{field: new value} for the changed fields, secrets reduced to "changed"."""
    changes = {}
    for name in fields:
        if name in SECRET_FIELDS:
            changes[name] = "changed"
            continue
        value = getattr(instance, name, None)
        if hasattr(value, "all"):  # many-to-many
            value = sorted(str(item) for item in value.all())
        elif hasattr(value, "pk"):
            value = str(value)
        changes[name] = value if isinstance(value, (int, float, bool, type(None), list)) else str(value)
    return changes


def record(actor, action, obj=None, changes=None):
    return AuditEvent.objects.create(
        action=action,
        object_type=obj._meta.model_name if obj is not None else "",
        object_id=str(obj.pk) if obj is not None else "",
        object_repr=str(obj)[:200] if obj is not None else "",
        changes=changes or {},
        **actor_fields(actor),
    )
