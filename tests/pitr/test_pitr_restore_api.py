"""Point-in-time restores through the API (pitr/api_views.py): the same
service as the wizard, on a real WAL-streaming cluster, with the host named."""

import os

import pytest
from django.conf import settings

from pitr.models import PitrRestore
from tests.catalog.api.helpers import bearer, make_token
from tests.harness.pg import free_port
from tests.pitr.test_pitr_restore import (  # noqa: F401 — fixtures
    insert_batch,
    protected,
    restore_root,
    restored_batches,
    switch_and_ship,
    take_base_backup,
)

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.slow]


def post_restore(client, source, raw, **body):
    return client.post(
        f"/api/v1/sources/{source.pk}/pitr-restores", body, content_type="application/json", headers=bearer(raw)
    )


def test_a_restore_token_restores_on_the_named_host_and_reads_the_outcome(protected, client, restore_root):
    cluster, source = protected
    take_base_backup(source, cluster.destination)
    insert_batch(cluster, 1)
    switch_and_ship(cluster, source)
    _, raw = make_token(scopes=["read", "restore"])
    port = free_port()

    hosts = client.get("/api/v1/hosts", headers=bearer(raw)).json()["hosts"]
    assert [(h["host"], h["takes_host_bound_work"]) for h in hosts] == [(settings.HOST_NAME, True)]
    answer = post_restore(
        client,
        source,
        raw,
        target="latest",
        data_directory=os.path.join(restore_root, "from-api"),
        port=port,
        host=settings.HOST_NAME,
    )

    assert answer.status_code == 202, answer.content
    job = PitrRestore.objects.get()
    assert answer["Location"].endswith(f"/api/v1/pitr-restores/{job.pk}")
    assert job.host == settings.HOST_NAME and job.requested_by is None
    detail = client.get(answer["Location"], headers=bearer(raw)).json()
    assert detail["status"] == "succeeded", detail["summary"]
    assert detail["host"] == settings.HOST_NAME and detail["port"] == port
    assert detail["connect"] == f"psql -h localhost -p {port} -U postgres postgres"
    assert restored_batches(job) == [1]


def test_a_host_without_running_workers_is_refused_and_nothing_is_queued(protected, client, restore_root):
    cluster, source = protected
    take_base_backup(source, cluster.destination)
    _, raw = make_token(scopes=["restore"])

    answer = post_restore(
        client,
        source,
        raw,
        target="latest",
        data_directory=os.path.join(restore_root, "elsewhere"),
        port=free_port(),
        host="host-that-left",
    )

    assert answer.status_code == 409
    assert answer.json()["error"].startswith("No worker runs host host-that-left's own queue")
    assert not PitrRestore.objects.exists()


def test_restores_need_the_restore_scope_and_a_complete_request(protected, client, restore_root):
    _, source = protected
    _, read_only = make_token(scopes=["read", "backup"])
    _, restorer = make_token(scopes=["restore"], name="restorer")

    refused = post_restore(client, source, read_only, target="latest", data_directory="/x", port=6000)
    assert refused.status_code == 403 and "'restore' scope" in refused.json()["error"]
    no_port = post_restore(client, source, restorer, target="latest", data_directory=os.path.join(restore_root, "a"))
    assert no_port.status_code == 400 and no_port.json()["error"].startswith("port is required")
    no_time = post_restore(client, source, restorer, data_directory=os.path.join(restore_root, "a"), port=6000)
    assert no_time.status_code == 400 and "target_time is required" in no_time.json()["error"]
    assert client.get("/api/v1/pitr-restores/999", headers=bearer(restorer)).status_code == 403
    assert not PitrRestore.objects.exists()
