"""Runs the web server, the three django-q2 clusters (work, monitoring, and
this host's own queue) and the WAL receiver supervisor together; Ctrl-C stops them all. The web server is
gunicorn (static files come from whitenoise); Django's development server
only with --dev, for working on Strongroom itself."""

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Sequence
from types import FrameType
from typing import Any

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError, CommandParser

from backupsite.envconfig import env
from catalog import admin_password


class Command(BaseCommand):
    help = "Starts the web server and the task workers; Ctrl-C stops them all cleanly."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--bind", default=env("STRONGROOM_BIND", "127.0.0.1:8000"))
        parser.add_argument(
            "--dev",
            action="store_true",
            help="Django's development server instead of gunicorn: for working on Strongroom, never for its users",
        )

    def handle(self, *args: Any, bind: str, dev: bool, **options: Any) -> None:
        if settings.DEBUG and not dev:
            raise CommandError(
                "DEBUG is on, and with it an error page shows anyone the settings and the code around the error: "
                "the production server does not run that way. Unset DEBUG, or use `manage.py serve --dev` "
                "on a development machine."
            )
        manage = [sys.executable, "manage.py"]
        monitor_env = {**os.environ, "Q_CLUSTER_NAME": settings.MONITOR_CLUSTER}
        host_env = {**os.environ, "Q_CLUSTER_NAME": "strongroom-host"}  # made this host's queue by the settings
        # serve ran the system checks before it got here: their warnings (such as
        # files other users can read, catalog/checks.py) print once, not once per child.
        children = [
            subprocess.Popen(manage + ["qcluster", "--skip-checks"]),
            # The tick and alerts have a worker of their own (catalog/queues.py).
            subprocess.Popen(manage + ["qcluster", "--skip-checks"], env=monitor_env),
            # Work only this host can do: a point-in-time restore into its disk (catalog/queues.py).
            subprocess.Popen(manage + ["qcluster", "--skip-checks"], env=host_env),
            subprocess.Popen(manage + ["runserver", bind, "--noreload", "--skip-checks"])
            if dev
            else subprocess.Popen(gunicorn(bind), env={**os.environ, "STRONGROOM_CHECKED": "1"}),
            # pg_receivewal for every source under streaming continuous protection (pitr/receiver.py).
            subprocess.Popen(manage + ["wal_receiver", "--skip-checks"]),
        ]
        host, port = local_address(bind)
        self.stdout.write(f"Strongroom is starting on http://{bind}/ (Ctrl-C stops it)")
        stopping = False

        def stop(signum: int, frame: FrameType | None) -> None:
            nonlocal stopping
            stopping = True

        signal.signal(signal.SIGINT, stop)
        signal.signal(signal.SIGTERM, stop)
        said_how_to_sign_in = False
        while not stopping and all(child.poll() is None for child in children):
            if not said_how_to_sign_in and answers(host, port):
                # Last, once the web server listens and the workers' start-up
                # lines are out: not a line lost among them.
                said_how_to_sign_in = True
                time.sleep(1)
                self.say_how_to_sign_in(f"http://{f'[{host}]' if ':' in host else host}:{port}/")
            time.sleep(0.5)
        self.shutdown(children)

    def say_how_to_sign_in(self, url: str) -> None:
        rule = "─" * 72
        lines = ["Strongroom is running (Ctrl-C stops it).", *admin_password.sign_in_lines(url)]
        self.stdout.write(self.style.SUCCESS("\n".join([rule, *lines, rule])))
        self.stdout.flush()

    def shutdown(self, children: Sequence["subprocess.Popen[bytes]"]) -> None:
        self.stdout.write("Stopping the web server and the workers…")
        for child in children:
            if child.poll() is None:
                child.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + 30
        for child in children:
            try:
                child.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                child.kill()
                child.wait()
        self.stdout.write("Stopped.")


def gunicorn(bind: str) -> list[str]:
    """gunicorn with Strongroom's settings (backupsite/gunicorn_config.py), on `bind`."""
    return [
        sys.executable,
        "-m",
        "gunicorn",
        "backupsite.wsgi",
        "--config",
        "python:backupsite.gunicorn_config",
        "--bind",
        bind,
    ]


def local_address(bind: str) -> tuple[str, int]:
    """(host, port) to reach `bind` from this machine: a wildcard address
    (0.0.0.0, ::) is reached, and shown, as the loopback address."""
    host, _, port = bind.rpartition(":")
    host = host.strip("[]")
    return ("127.0.0.1" if host in ("", "0.0.0.0", "::") else host), int(port)


def answers(host: str, port: int) -> bool:
    try:
        socket.create_connection((host, port), timeout=0.5).close()
    except OSError:
        return False
    return True
