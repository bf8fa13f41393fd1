import os

from django.core.asgi import get_asgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "backupsite.settings")
application = get_asgi_application()

# A server that loads this module runs no system checks: log what they would say
# about files other users can read (catalog/checks.py).
from catalog.checks import log_open_files  # noqa: E402

log_open_files()
