import os

from django.core.wsgi import get_wsgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "backupsite.settings")
application = get_wsgi_application()

# A server that loads this module runs no system checks: log what they would say
# about files other users can read (catalog/checks.py). Not under `manage.py
# serve`, which ran the checks itself before it started the server.
from catalog.checks import log_open_files  # noqa: E402

if not os.environ.get("STRONGROOM_CHECKED"):
    log_open_files()
