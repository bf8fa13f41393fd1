"""Runs the web server and a django-q2 worker together; Ctrl-C stops both."""

import signal
import subprocess
import sys
import time

from backupsite.envconfig import env
from django.core.management.base import BaseCommand


class Command(BaseCommand):
    help = "Starts the web server and the task worker; Ctrl-C stops both cleanly."

    def add_arguments(self, parser):
        parser.add_argument("--bind", default=env("STRONGROOM_BIND", "127.0.0.1:8000"))

    def handle(self, *args, bind, **options):
        manage = [sys.executable, "manage.py"]
        children = [
            subprocess.Popen(manage + ["qcluster"]),
            subprocess.Popen(manage + ["runserver", bind, "--noreload"]),
        ]
        self.stdout.write(self.style.SUCCESS(f"Strongroom is starting on http://{bind}/ (Ctrl-C stops it)"))
        stopping = False

        def stop(signum, frame):
            nonlocal stopping
            stopping = True

        signal.signal(signal.SIGINT, stop)
        signal.signal(signal.SIGTERM, stop)
        while not stopping and all(child.poll() is None for child in children):
            time.sleep(0.5)
        self.shutdown(children)

    def shutdown(self, children):
        self.stdout.write("Stopping the web server and the worker…")
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
