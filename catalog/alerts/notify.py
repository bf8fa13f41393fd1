"""(being written) Telling channels about alerts.

Interface used by the monitoring code: dispatch(alert, event) with event one of
Notification.OPENED / Notification.RESOLVED. It must be called inside or after
the transaction that opened or resolved the alert; it queues the sending (a
django-q task taking the alert id) on commit, so a slow channel never holds up
a backup or the tick."""


def dispatch(alert, event):
    """Queues notifications about `alert` for every channel that wants them."""
    return None
