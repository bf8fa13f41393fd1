"""compose.yaml against the Dockerfile and the settings, wherever the tests
run (tests/test_docker_image.py runs the image itself where a Docker engine
answers): the volumes are the image's, every secret a setting reads from a
file is declared, and the metadata database is a server the image's pg_dump
can dump."""

import re
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent
COMPOSE = yaml.safe_load((ROOT / "compose.yaml").read_text())
DOCKERFILE = (ROOT / "Dockerfile").read_text()
SERVICES = COMPOSE["services"]


def test_strongroom_postgresql_and_redis_are_the_services():
    assert set(SERVICES) == {"strongroom", "postgres", "redis"}
    assert set(SERVICES["strongroom"]["depends_on"]) == {"postgres", "redis"}
    assert SERVICES["strongroom"]["environment"]["REDIS_URL"].startswith("redis://redis:")


def test_the_data_and_the_keys_are_the_images_volumes():
    volumes = re.search(r"^VOLUME (\[.*\])$", DOCKERFILE, re.MULTILINE)
    mounted = [volume.split(":")[1] for volume in SERVICES["strongroom"]["volumes"]]
    assert sorted(mounted) == sorted(yaml.safe_load(volumes.group(1)))
    assert sorted(mounted) == ["/var/lib/strongroom", "/var/lib/strongroom-keys"]


def test_every_secret_read_from_a_file_is_declared_and_given_to_its_service():
    for name, service in SERVICES.items():
        given = set(service.get("secrets", []))
        for variable, value in service.get("environment", {}).items():
            if variable.endswith("_FILE"):
                secret = value.removeprefix("/run/secrets/")
                assert secret in given and secret in COMPOSE["secrets"], f"{name}: {variable}"
    environment = SERVICES["strongroom"]["environment"]
    # The settings read these through their *_FILE variants (backupsite/envconfig.py).
    assert {"DATABASE_URL_FILE", "SECRET_KEY_FILE"} <= set(environment)
    assert not {"DATABASE_URL", "SECRET_KEY"} & set(environment)


def test_the_postgresql_server_is_the_version_of_the_images_client_tools():
    # Debian 12's postgresql-client is 15; pg_dump refuses a newer server.
    assert SERVICES["postgres"]["image"].startswith("postgres:15")
    assert "bookworm" in re.search(r"^ARG BASE_IMAGE=(.*)$", DOCKERFILE, re.MULTILINE).group(1)
