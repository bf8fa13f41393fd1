# Strongroom's image: Debian 12 with what deploy/install-debian.sh installs,
# run as the non-root user strongroom. `docker compose up` (compose.yaml) runs
# it with PostgreSQL and Redis; docs/DEPLOYMENT.md, "Docker and compose".
#
# Plain Dockerfile syntax, so that Debian's docker.io builds it as well. The
# base is an argument so that an image made from Debian's packages can stand
# in for Docker Hub's (mmdebstrap bookworm - | docker import - strongroom-base).
ARG BASE_IMAGE=debian:bookworm-slim
FROM ${BASE_IMAGE}

# Fixed ids, so that volumes and secret files can be given to the user
# from outside (compose's file secrets keep the host file's owner and mode).
ARG STRONGROOM_UID=990

# pip's settings for the build where the virtualenv comes from a mirror or a
# wheelhouse rather than PyPI (tests/test_docker_image.py builds from one).
ARG PIP_INDEX_URL
ARG PIP_FIND_LINKS
ARG PIP_NO_INDEX

ENV LANG=C.UTF-8 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

# The Debian packages, then the virtualenv from requirements.txt alone, so a
# change of the code rebuilds neither.
COPY deploy/install-debian.sh /opt/strongroom/deploy/install-debian.sh
COPY requirements.txt /opt/strongroom/requirements.txt
RUN bash /opt/strongroom/deploy/install-debian.sh --packages-only \
    && rm -rf /var/lib/apt/lists/* \
    && bash /opt/strongroom/deploy/install-debian.sh --skip-packages --uid "$STRONGROOM_UID" \
         --app-dir /opt/strongroom --data-dir /var/lib/strongroom --key-dir /var/lib/strongroom-keys \
         --no-config --no-migrate --no-systemd

# The code, used in place; the second run finds the virtualenv up to date
# and makes the code root's and read-only to the service.
COPY . /opt/strongroom
RUN bash /opt/strongroom/deploy/install-debian.sh --skip-packages --uid "$STRONGROOM_UID" \
      --app-dir /opt/strongroom --data-dir /var/lib/strongroom --key-dir /var/lib/strongroom-keys \
      --no-config --no-migrate --no-systemd

# The settings come from the container's environment (README, Configuration):
# DATABASE_URL, REDIS_URL, SECRET_KEY_FILE and so on. Without DATABASE_URL the
# metadata database is SQLite in the data volume; without SECRET_KEY(_FILE) a
# secret key is generated there.
ENV STRONGROOM_DATA_DIR=/var/lib/strongroom \
    STRONGROOM_KEY_DIR=/var/lib/strongroom-keys \
    PATH=/opt/strongroom/.venv/bin:/usr/sbin:/usr/bin:/sbin:/bin
# The metadata database, local backups and spools; and the master keys on a
# volume of their own, to be kept (and copied away) apart from the data.
VOLUME ["/var/lib/strongroom", "/var/lib/strongroom-keys"]

USER strongroom
WORKDIR /opt/strongroom
EXPOSE 8000
HEALTHCHECK --interval=30s --timeout=5s --start-period=60s --retries=3 \
  CMD ["python", "-c", "import json, urllib.request; json.load(urllib.request.urlopen('http://127.0.0.1:8000/healthz', timeout=4))['alive'] or exit(1)"]
# Migrates and bootstraps (master key, administrator) before the command.
ENTRYPOINT ["/opt/strongroom/deploy/docker-entrypoint.sh"]
# gunicorn, the work and monitoring clusters and the WAL receivers, together.
CMD ["python", "manage.py", "serve", "--bind", "0.0.0.0:8000"]
