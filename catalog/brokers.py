"""django-q2's brokers, each also keeping its cluster's heartbeat.

django-q2 keeps a cluster's status in Redis, or with the ORM broker in the
cache of the process that wrote it, where no other process sees it. Its
sentinel saves that status every half second while it guards its workers;
these brokers also record, at most every WORKER_HEARTBEAT_SECONDS, that the
cluster is alive on this host (catalog.queues.record_heartbeat), in the
metadata database that every host and /readyz read."""

import time

from django.conf import settings
from django.db import connections
from django_q.brokers.orm import ORM
from django_q.brokers.redis_broker import Redis
from django_q.conf import Conf

from catalog import queues


class HeartbeatMixin:
    heartbeat_due = 0.0

    def set_stat(self, key: str, value: str, timeout: int) -> None:
        super().set_stat(key, value, timeout)  # type: ignore[misc]  # the broker's own, below in the MRO
        now = time.monotonic()
        if now >= self.heartbeat_due:
            self.heartbeat_due = now + settings.WORKER_HEARTBEAT_SECONDS
            # The sentinel's process runs one cluster: Conf names its queue.
            queues.record_heartbeat(Conf.CLUSTER_NAME)
            # The sentinel forks workers when one dies, without closing its
            # connections first: one left open here would be shared by both
            # processes, each talking over the other on the same socket.
            connections.close_all()


class OrmWithHeartbeat(HeartbeatMixin, ORM):
    pass


class RedisWithHeartbeat(HeartbeatMixin, Redis):
    pass
