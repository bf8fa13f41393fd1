"""Settings of a worker subprocess started by tests/harness/worker.py: the
test settings (same data directory, keys and tool paths), but tasks go
through the broker instead of running inline."""

from tests.settings import *  # noqa: F401,F403
from tests.settings import Q_CLUSTER

Q_CLUSTER = {**Q_CLUSTER, "sync": False}
