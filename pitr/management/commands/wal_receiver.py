"""Runs the WAL receiver supervisor: a pg_receivewal per source under
streaming protection, restarted when it dies, and the shipping of its WAL.
A production process beside the web server and the task workers."""

import signal
from types import FrameType
from typing import Any

from django.core.management.base import BaseCommand

from pitr.receiver import Supervisor


class Command(BaseCommand):
    help = "Supervises pg_receivewal for every source with streaming continuous protection; Ctrl-C stops it."

    def handle(self, *args: Any, **options: Any) -> None:
        supervisor = Supervisor()

        def stop(signum: int, frame: FrameType | None) -> None:
            supervisor.stop_event.set()

        signal.signal(signal.SIGINT, stop)
        signal.signal(signal.SIGTERM, stop)
        self.stdout.write("WAL receiver supervisor running.")
        supervisor.run()
        self.stdout.write("WAL receiver supervisor stopped.")
