#!/bin/sh
# The container's entrypoint (Dockerfile): before the command, the metadata
# database is migrated and bootstrap makes what a first start needs (a master
# key, the administrator, with its password from STRONGROOM_ADMIN_PASSWORD(_FILE)
# or generated into the data volume's admin-password). Both do nothing the
# second time. STRONGROOM_MIGRATE=0 skips them, for a second container on the
# same metadata database (workers started with another command).
set -eu
if [ "${STRONGROOM_MIGRATE:-1}" != 0 ]; then
  python manage.py migrate --noinput
  python manage.py bootstrap
fi
exec "$@"
