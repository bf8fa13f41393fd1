"""The container image (Dockerfile), built and started where a Docker engine
answers `docker info`, and skipped, saying why, where none does.

The base image is Docker Hub's debian:bookworm-slim when the engine has it;
otherwise, with mmdebstrap, one made from Debian's packages
(strongroom-base:bookworm), since Docker Hub may be out of reach. The
virtualenv in the image comes from wheels this machine's Debian Python
fetched with pip's own settings (served to the build on the loopback), since
the build's pip may not reach or trust the index this machine uses; the
versions are requirements.txt's either way. compose.yaml's PostgreSQL and
Redis images come from Docker Hub too, so compose itself is not run here: the
image is run as compose runs it (its settings from secret files, PostgreSQL
and Redis), against the test's own PostgreSQL database and Redis."""

import functools
import http.server
import json
import os
import shutil
import subprocess
import threading
import time
import urllib.request
import uuid
from pathlib import Path

import pytest

from tests.harness.pg import free_port
from tests.harness.redis import redis_url  # noqa: F401 — a fixture

ROOT = Path(__file__).resolve().parent.parent
IMAGE = "strongroom:test"
BASE = "strongroom-base:bookworm"
UID = 990  # the Dockerfile's STRONGROOM_UID
BUILD_ENV = {**os.environ, "DOCKER_BUILDKIT": "0"}  # the classic builder, which Debian's docker.io has


def docker(*arguments, timeout=120, check=True, **kwargs):
    done = subprocess.run(["docker", *arguments], capture_output=True, text=True, timeout=timeout, **kwargs)
    if check:
        assert done.returncode == 0, f"docker {' '.join(arguments)}: {done.stdout}{done.stderr}"
    return done


def why_no_docker():
    """Why the image cannot be built here, or None when it can."""
    if shutil.which("docker") is None:
        return "there is no docker command here"
    try:
        done = docker("info", "--format", "{{.ServerVersion}}", timeout=30, check=False)
    except subprocess.TimeoutExpired:
        return "`docker info` did not answer within 30 s"
    if done.returncode != 0:
        lines = [line for line in (done.stderr or done.stdout).splitlines() if line.strip()]
        return f"no Docker engine answers `docker info`: {lines[-1] if lines else 'no output'}"
    return None


NO_DOCKER = why_no_docker()
pytestmark = [pytest.mark.slow, pytest.mark.skipif(NO_DOCKER is not None, reason=NO_DOCKER or "")]


def has_image(name):
    return docker("image", "inspect", name, check=False).returncode == 0


def base_image():
    """The image to build on: Docker Hub's when the engine has it, else one from Debian's packages."""
    if has_image("debian:bookworm-slim"):
        return "debian:bookworm-slim"
    if not has_image(BASE) and shutil.which("mmdebstrap"):
        made = subprocess.Popen(["mmdebstrap", "--variant=minbase", "bookworm", "-"], stdout=subprocess.PIPE)
        imported = subprocess.run(["docker", "import", "-", BASE], stdin=made.stdout, capture_output=True, timeout=900)
        made.stdout.close()
        assert made.wait(timeout=60) == 0 and imported.returncode == 0, imported.stderr
    return BASE if has_image(BASE) else "debian:bookworm-slim"  # else the engine pulls it


class QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format, *args):
        pass


@pytest.fixture(scope="module")
def wheelhouse(tmp_path_factory):
    """pip's build arguments: the wheels of requirements.txt for Debian 12's
    Python, on a loopback HTTP server; none where this is not Debian 12."""
    if not Path("/etc/debian_version").read_text().startswith("12") or not Path("/usr/bin/python3").exists():
        yield []
        return
    folder = tmp_path_factory.mktemp("wheelhouse")
    subprocess.run(["/usr/bin/python3", "-m", "venv", folder / "venv"], check=True)
    pip = [folder / "venv" / "bin" / "pip", "wheel", "--quiet", "-r", ROOT / "requirements.txt"]
    subprocess.run([*pip, "-w", folder / "wheels"], check=True, capture_output=True, timeout=600)
    handler = functools.partial(QuietHandler, directory=str(folder / "wheels"))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    port = server.server_address[1]
    yield ["--build-arg", "PIP_NO_INDEX=1", "--build-arg", f"PIP_FIND_LINKS=http://127.0.0.1:{port}/"]
    server.shutdown()


@pytest.fixture(scope="module")
def image(wheelhouse):
    build = ["build", "--network", "host", "--build-arg", f"BASE_IMAGE={base_image()}", *wheelhouse, "-t", IMAGE]
    docker(*build, str(ROOT), timeout=1500, env=BUILD_ENV)
    yield IMAGE
    # The build arguments (the wheelhouse's port) differ each time, so its layers would never be reused.
    docker("rmi", "-f", IMAGE, check=False)


@pytest.fixture
def names():
    """Unique names for the test's containers, volumes and network; all removed afterwards."""
    tag = uuid.uuid4().hex[:8]
    made = {kind: f"strongroom-test-{kind}-{tag}" for kind in ("web", "data", "keys", "net")}
    yield made
    docker("rm", "-f", made["web"], check=False)
    docker("volume", "rm", "-f", made["data"], made["keys"], check=False)
    docker("network", "rm", made["net"], check=False)


def wait_for(url, container, timeout=120):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        state = docker("inspect", "-f", "{{.State.Running}}", container).stdout.strip()
        if state != "true":
            raise AssertionError(f"the container stopped: {docker('logs', container).stdout}")
        try:
            with urllib.request.urlopen(url, timeout=3) as response:
                return json.loads(response.read())
        except OSError as error:
            if getattr(error, "code", None) == 503:
                return json.loads(error.read())
            time.sleep(0.5)
    raise AssertionError(f"{url} did not answer within {timeout} s: {docker('logs', container).stdout}")


def in_container(container, *command):
    return docker("exec", container, *command).stdout.split()


def test_it_serves_as_its_own_user_with_its_data_and_keys_on_volumes(image, names):
    docker("network", "create", names["net"])
    port = free_port()
    volumes = ["-v", f"{names['data']}:/var/lib/strongroom", "-v", f"{names['keys']}:/var/lib/strongroom-keys"]
    run = ["run", "-d", "--name", names["web"], "--network", names["net"], "-p", f"127.0.0.1:{port}:8000"]
    run += [*volumes, "--health-interval", "2s", "-e", "STRONGROOM_ADMIN_PASSWORD=container-Pa55word", image]
    docker(*run)

    assert wait_for(f"http://127.0.0.1:{port}/healthz", names["web"]) == {"alive": True}
    deadline = time.monotonic() + 60
    while docker("inspect", "-f", "{{.State.Health.Status}}", names["web"]).stdout.strip() != "healthy":
        assert time.monotonic() < deadline, "the HEALTHCHECK never passed"
        time.sleep(1)
    assert in_container(names["web"], "id", "-un") == ["strongroom"]
    # Every process, gunicorn's and the workers' included, is the non-root user's.
    users = {line.split()[0] for line in docker("top", names["web"], "-eo", "uid,pid").stdout.splitlines()[1:]}
    assert users == {str(UID)}
    stat = ["stat", "-c", "%U:%G:%a"]
    assert (
        in_container(names["web"], *stat, "/var/lib/strongroom", "/var/lib/strongroom-keys")
        == ["strongroom:strongroom:700"] * 2
    )
    # The entrypoint migrated and bootstrapped: a master key on its volume, the database on the other.
    key_files = in_container(names["web"], "sh", "-c", "stat -c %U:%a /var/lib/strongroom-keys/*.key")
    database = in_container(names["web"], *stat, "/var/lib/strongroom/strongroom.sqlite3")
    assert key_files == ["strongroom:600"] and database == ["strongroom:strongroom:600"]
    assert "pg_dump (PostgreSQL)" in docker("exec", names["web"], "pg_dump", "--version").stdout

    # `docker stop` is a clean stop, the workers' included.
    docker("stop", "--time", "40", names["web"], timeout=60)
    assert docker("inspect", "-f", "{{.State.ExitCode}}", names["web"]).stdout.strip() == "0"
    assert "Stopped." in docker("logs", names["web"]).stdout


def secret_file(folder, name, text):
    """A secret as compose mounts one: a file of the host, owned by the container's user, 0400."""
    path = folder / name
    path.write_text(text)
    os.chown(path, UID, UID)
    path.chmod(0o400)
    return ["-v", f"{path}:/run/secrets/{name}:ro"]


def test_it_runs_on_postgresql_and_redis_with_its_settings_from_secret_files(
    image, names, pg_database, redis_url, tmp_path
):
    database_url = "postgresql://{user}@{host}:{port}/{dbname}".format(**pg_database)
    secrets = secret_file(tmp_path, "database_url", database_url) + secret_file(tmp_path, "secret_key", "s" * 50)
    settings = ["DATABASE_URL_FILE=/run/secrets/database_url", "SECRET_KEY_FILE=/run/secrets/secret_key"]
    settings += [f"REDIS_URL={redis_url}", "STRONGROOM_ADMIN_PASSWORD=container-Pa55word"]
    port = free_port()
    # The host's network: the test's PostgreSQL and Redis listen on its loopback only.
    run = ["run", "-d", "--name", names["web"], "--network", "host", *secrets]
    run += [arg for setting in settings for arg in ("-e", setting)]
    run += ["-v", f"{names['data']}:/var/lib/strongroom", "-v", f"{names['keys']}:/var/lib/strongroom-keys"]
    docker(*run, image, "python", "manage.py", "serve", "--bind", f"127.0.0.1:{port}")

    deadline = time.monotonic() + 120
    while not (answer := wait_for(f"http://127.0.0.1:{port}/readyz", names["web"]))["ready"]:
        assert time.monotonic() < deadline, answer
        time.sleep(1)
    checks = answer["checks"]
    assert "(postgresql)" in checks["database"]["detail"] and "(Redis)" in checks["broker"]["detail"]
    # No secret key generated beside the data: it came from the secret file.
    assert docker("exec", names["web"], "test", "-e", "/var/lib/strongroom/secret_key", check=False).returncode == 1
    docker("stop", "--time", "40", names["web"], timeout=60)
