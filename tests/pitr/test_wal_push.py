"""Archive mode: the server's archive_command pushes each WAL file with curl
to /api/v1/sources/<id>/wal/<name>; a token with the "backup" scope is needed."""

import subprocess
from pathlib import Path

import pytest

from catalog.api import tokens
from pitr import wal
from pitr.models import ContinuousProtection, WalSegment
from tests.catalog.api.helpers import token_owner
from tests.factories import local_destination
from tests.pitr.wal_helpers import cluster_source, execute

pytestmark = pytest.mark.django_db(transaction=True)


def curl_push(live_server, source, path, header_file):
    """What archive_command runs (see pitr.wal.archive_command), against the live server."""
    url = f"{live_server.url}/api/v1/sources/{source.pk}/wal/{Path(path).name}"
    return subprocess.run(
        ["curl", "-sS", "-o", "/dev/stderr", "-w", "%{http_code}", "-H", f"@{header_file}", "-T", str(path), url],
        capture_output=True,
        text=True,
    )


def test_it_stores_a_pushed_segment_and_refuses_a_bad_token(cluster, tmp_path, live_server):
    source = cluster_source(cluster)
    wal.enable_protection(
        "test", source, mode=ContinuousProtection.ARCHIVE, destinations=[local_destination(tmp_path / "wal")]
    )
    name = execute(
        cluster,
        "CREATE TABLE t AS SELECT g FROM generate_series(1, 20000) g",
        "SELECT pg_walfile_name(pg_switch_wal())",
    )[0][0]
    segment_path = Path(cluster.datadir, "pg_wal", name)
    _, raw = tokens.create_token("test", "archive_command", ["backup"], owner=token_owner())
    good, bad = tmp_path / "good-token", tmp_path / "bad-token"
    good.write_text(f"Authorization: Bearer {raw}\n")
    bad.write_text("Authorization: Bearer sr_not-a-real-token\n")

    refused = curl_push(live_server, source, segment_path, bad)
    assert refused.stdout == "401"
    assert not WalSegment.objects.filter(source=source).exists()

    pushed = curl_push(live_server, source, segment_path, good)
    assert pushed.stdout == "201", pushed.stderr
    segment = WalSegment.objects.get(source=source, name=name)
    assert wal.read_wal_bytes(segment) == segment_path.read_bytes()
    assert ContinuousProtection.objects.get(source=source).last_segment_name == name
    # archive_command retries after a lost answer: a second push stores nothing new.
    again = curl_push(live_server, source, segment_path, good)
    assert again.stdout == "200"
    assert WalSegment.objects.get(source=source, name=name).sha256 == segment.sha256
    assert raw not in again.stderr


def test_it_refuses_a_token_without_the_backup_scope_and_bad_names(cluster, tmp_path, client):
    source = cluster_source(cluster)
    wal.enable_protection(
        "test", source, mode=ContinuousProtection.ARCHIVE, destinations=[local_destination(tmp_path / "wal")]
    )
    _, read_only = tokens.create_token("test", "reader", ["read"], owner=token_owner())
    url = f"/api/v1/sources/{source.pk}/wal/000000010000000000000001"
    response = client.put(
        url, b"x" * 100, content_type="application/octet-stream", HTTP_AUTHORIZATION=f"Bearer {read_only}"
    )
    assert response.status_code == 403
    _, raw = tokens.create_token("test", "pusher", ["backup"], owner=token_owner())
    response = client.put(
        f"/api/v1/sources/{source.pk}/wal/postgresql.conf",
        b"x",
        content_type="application/octet-stream",
        HTTP_AUTHORIZATION=f"Bearer {raw}",
    )
    assert response.status_code == 400 and "not a WAL segment" in response.json()["error"]
    assert not WalSegment.objects.exists()
