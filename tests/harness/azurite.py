"""Azurite, Microsoft's Azure Storage emulator, serving the blob service on a
free loopback port, started once per session with its data in a temporary
directory.

It comes from npm, pinned in tests/harness/node/package-lock.json; CI installs
it with `npm ci --prefix tests/harness/node` (.ci/run). Without it the Azure
tests are skipped and say how to install it.

What Azurite does not do (its README, "Differences between Azurite and Azure
Storage"): immutability policies and legal holds are accepted and ignored on
upload and refused (APINotImplemented) when set afterwards, so Azure
destinations do not offer immutability (docs/DEPLOYMENT.md).
"""

import contextlib
import shutil
import socket
import subprocess
import tempfile
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from catalog.engine.wal import stop_process
from tests.harness.pg import free_port

NODE_DIR = Path(__file__).resolve().parent / "node"
AZURITE_BLOB = NODE_DIR / "node_modules" / ".bin" / "azurite-blob"
# Azurite's development account; its key is the well-known one printed in
# Azurite's own documentation, not a secret.
ACCOUNT = "devstoreaccount1"
ACCOUNT_KEY = "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="


def missing_reason():
    """Why Azurite cannot start here, or None."""
    if shutil.which("node") is None:
        return "Azurite needs Node.js (node) on the PATH"
    if not AZURITE_BLOB.exists():
        return "Azurite is not installed: run `npm ci --prefix tests/harness/node`"
    return None


def answers(port):
    with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=0.5):
        return True
    return False


def start_server(location):
    """Azurite's blob service on a free port, keeping its data in `location`;
    returns (process, blob service URL)."""
    port = free_port()
    log = Path(location) / "azurite.log"
    # Its output goes to a file, not to a pipe nobody reads, which could fill and stall it.
    with log.open("wb") as output:
        process = subprocess.Popen(
            [
                str(AZURITE_BLOB),
                *("--blobHost", "127.0.0.1", "--blobPort", str(port), "--location", str(location)),
                "--silent",
                # The SDK may speak a newer API version than this Azurite knows; the
                # operations Strongroom uses are the same in both.
                "--skipApiVersionCheck",
                "--disableTelemetry",  # on by default: it would send usage data to Microsoft
            ],
            stdout=subprocess.DEVNULL,
            stderr=output,
        )
    deadline = time.monotonic() + 30
    while not answers(port):
        if time.monotonic() > deadline or process.poll() is not None:
            stop_process(process)
            raise RuntimeError(f"Azurite did not start: {log.read_text(errors='replace')[-500:]}")
        time.sleep(0.1)
    return process, f"http://127.0.0.1:{port}/{ACCOUNT}"


def service(endpoint_url, credential=None):
    """A client of the whole blob service with the account key (or `credential`)."""
    from azure.storage.blob import BlobServiceClient

    return BlobServiceClient(
        endpoint_url, credential=credential or {"account_name": ACCOUNT, "account_key": ACCOUNT_KEY}
    )


def container_client(container):
    """The container of an `azure_container` fixture, as the account sees it."""
    return service(container["endpoint_url"]).get_container_client(container["container"])


def committed_blobs(container):
    return sorted(blob.name for blob in container_client(container).list_blobs())


def uncommitted_blobs(container):
    """Blobs that have staged blocks and no committed content."""
    every = {blob.name for blob in container_client(container).list_blobs(include=["uncommittedblobs"])}
    return sorted(every - set(committed_blobs(container)))


def container_sas(container, permission="rwdl", hours=1):
    """A SAS token for the container alone, allowing `permission`."""
    from azure.storage.blob import ContainerSasPermissions, generate_container_sas

    return generate_container_sas(
        ACCOUNT,
        container["container"],
        account_key=ACCOUNT_KEY,
        permission=ContainerSasPermissions.from_string(permission),
        expiry=datetime.now(UTC) + timedelta(hours=hours),
    )


@pytest.fixture(scope="session")
def azurite_server():
    """The blob service URL and the development account of a session's Azurite."""
    if reason := missing_reason():
        pytest.skip(reason)
    location = tempfile.mkdtemp(prefix="strongroom-azurite-")
    process, endpoint_url = start_server(location)
    yield {"endpoint_url": endpoint_url, "account_name": ACCOUNT, "account_key": ACCOUNT_KEY}
    stop_process(process)
    shutil.rmtree(location, ignore_errors=True)


@pytest.fixture
def azure_container(azurite_server):
    """A fresh, empty container on the session's Azurite."""
    name = f"sr-test-{uuid.uuid4().hex[:10]}"
    service(azurite_server["endpoint_url"]).create_container(name)
    return {**azurite_server, "container": name}
