"""gunicorn's settings for Strongroom, one place for `manage.py serve` and
the systemd unit (deploy/systemd): `gunicorn backupsite.wsgi -c
python:backupsite.gunicorn_config`. Threaded workers, so that a long
download or a live progress page holds a thread, not a whole worker; the
application loaded once before the workers fork; a stop waits for the
requests in flight a few seconds, not gunicorn's default 30."""

from backupsite.envconfig import env, env_int

bind = env("STRONGROOM_BIND", "127.0.0.1:8000")
workers = env_int("WEB_WORKERS", 2, minimum=1)
worker_class = "gthread"
threads = env_int("WEB_THREADS", 8, minimum=1)
preload_app = True
graceful_timeout = 10
# gunicorn's control socket would be a file in the service user's home,
# outside the data directory, and nothing of Strongroom's uses it.
control_socket_disable = True
