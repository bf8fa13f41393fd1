"""S3 faults injected by a proxy in front of the moto server (tests/harness/
faulty_proxy.py): transient errors and resets are retried with backoff and the
backup succeeds intact; a persistent failure fails it with a clear reason and
leaves no object and no open multipart upload; an unreachable endpoint fails
fast; a completion whose answer is lost is neither a failure nor a duplicate."""

import uuid
from itertools import pairwise

import pytest

from catalog import backup_runs, orphans
from catalog.models import AuditEvent, Backup, Copy
from tests.factories import local_destination, make_plan, pg_source, s3_destination
from tests.harness import pg, s3
from tests.harness.faulty_proxy import FaultyProxy
from tests.harness.sample_db import create_tricky_database, table_fingerprints
from tests.support import restore_now

# What one PostgreSQL backup leaves in a destination: its object, its manifest, its globals.
STORED_SUFFIXES = ("", ".manifest.json", ".manifest.json.globals")

pytestmark = pytest.mark.django_db(transaction=True)

PART = 5 << 20
SECRET = f"sr-s3-secret-{uuid.uuid4().hex}"  # moto takes any secret; this one must show nowhere


@pytest.fixture(scope="module")
def big_database():
    """About 6 MB as plain SQL: two parts of 5 MiB."""
    server = pg.ensure_server()
    name = f"sr_faults_{uuid.uuid4().hex[:8]}"
    conninfo = pg.create_database(name)
    create_tricky_database(conninfo, big_rows=105_000)
    yield {**server, **conninfo}
    pg.drop_database(name)


@pytest.fixture(autouse=True)
def quick_s3(settings):
    settings.S3_MAX_ATTEMPTS = 3
    settings.S3_CONNECT_TIMEOUT = 2
    settings.S3_READ_TIMEOUT = 2
    settings.S3_PART_SIZE_MB = PART >> 20


@pytest.fixture
def proxy(s3_server):
    proxy = FaultyProxy(s3_server, stall_seconds=30)
    yield proxy
    proxy.stop()


@pytest.fixture
def bucket(s3_bucket, proxy):
    """The test's bucket, reached through the proxy."""
    return {**s3_bucket, "endpoint_url": proxy.url, "secret_access_key": SECRET}


@pytest.fixture
def restored(pg_server):
    name = f"sr_faults_restored_{uuid.uuid4().hex[:8]}"
    yield name
    pg.drop_database(name)


def plan_for(database, destinations, verify=False):
    return make_plan(
        pg_source(database), destinations, format="plain", compression="none", encrypt=True, verify_new_backups=verify
    )


def run(plan):
    backup = backup_runs.start_backup("test", plan)
    backup.refresh_from_db()
    return backup


def stored_keys(bucket):
    return s3.all_keys(bucket["endpoint_url"], bucket["bucket"])


def direct(s3_bucket):
    """What the moto server itself holds, bypassing the proxy."""
    return stored_keys(s3_bucket), s3.open_uploads(s3_bucket["endpoint_url"], s3_bucket["bucket"])


def gaps(requests):
    return [later.at - earlier.at for earlier, later in pairwise(requests)]


def assert_no_secret(backup):
    events = str(list(AuditEvent.objects.values()))
    assert SECRET not in backup.error + backup.log + events


def test_it_retries_transient_errors_and_resets_and_the_backup_is_whole(
    big_database, proxy, bucket, s3_bucket, restored
):
    plan = plan_for(big_database, [s3_destination(bucket)], verify=True)
    faults = proxy.plan
    faults.add("503", "create_multipart_upload")
    faults.add("reset_after_forward", "create_multipart_upload")  # S3 made an upload; its answer was lost
    faults.add("500", "upload_part", part=1)
    faults.add("reset", "upload_part", part=1)
    faults.add("slowdown", "upload_part", part=2, times=2)  # two retries of one part: the backoff doubles
    faults.add("503", "complete_multipart_upload")
    faults.add("500", "head_object")
    faults.add("stall", "put_object", key_suffix=".manifest.json")  # longer than the read timeout
    faults.add("reset", "get_object", key_suffix=".enc")  # the checksum verification's read of the object

    backup = run(plan)

    assert backup.status == Backup.SUCCEEDED, backup.error
    assert faults.pending() == []  # every planned fault happened, and was survived
    assert backup.stored_bytes > PART
    assert len(faults.requests("upload_part")) == 2 + 4  # two parts, four retries
    part_two = [r for r in faults.requests("upload_part") if r.part == 2]
    assert [r.action for r in part_two] == ["slowdown", "slowdown", "forward"]
    first, second = gaps(part_two)
    # Full jitter: each pause is random below a ceiling that doubles (1 s, then 2 s for throttling).
    assert first < 1 + 1.5 and second < 2 + 1.5
    assert len(faults.requests("create_multipart_upload")) == 3
    assert len(faults.requests("complete_multipart_upload")) == 2
    # The stalled manifest upload was given up at the read timeout (2 s), not waited on until the stall ended.
    [stalled] = [r for r in faults.requests("put_object") if r.action == "stall"]
    assert stalled.client_gave_up

    # The policy's checksum verification read the object back through the reset.
    check = backup.verifications.get()
    assert check.status == "passed", check.summary
    assert check.evidence["copies"][0]["sha256"] == backup.sha256
    keys, uploads = direct(s3_bucket)
    assert keys == sorted(f"strongroom/{backup.object_key}{suffix}" for suffix in STORED_SUFFIXES)
    assert uploads == []

    # botocore retries requests, not bodies: a read cut off mid-way resumes where it stopped.
    faults.add("503", "get_object", key_suffix=backup.object_key)  # the dump's reads, not its globals'
    faults.add("reset_mid_body", "get_object", times=2, key_suffix=backup.object_key)
    job = restore_now(backup, target="new", database=restored)
    assert job.status == "succeeded", job.summary
    assert faults.pending() == []
    reads = [r.action for r in faults.requests("get_object") if r.key.endswith(backup.object_key)]
    assert reads == ["reset", "forward", "503", "reset_mid_body", "reset_mid_body", "forward"]
    assert table_fingerprints({**big_database, "dbname": restored}) == table_fingerprints(big_database)


def test_it_fails_cleanly_when_every_part_upload_fails_and_recovers(big_database, proxy, bucket, s3_bucket, tmp_path):
    remote = s3_destination(bucket)
    plan = plan_for(big_database, [local_destination(tmp_path), remote])
    proxy.plan.add("503", "upload_part", times=None)

    backup = run(plan)

    assert backup.status == Backup.PARTIAL
    assert backup.error.startswith("Off-site S3: S3 error on bucket ")
    assert "ServiceUnavailable" in backup.error and "gave up after 3 attempts" in backup.error
    assert "\n" not in backup.error and "Traceback" not in backup.log
    assert_no_secret(backup)
    copy = backup.copies.get(destination=remote)
    assert copy.status == Copy.FAILED
    assert backup.copies.exclude(destination=remote).get().status == Copy.DURABLE
    assert len(proxy.plan.requests("upload_part")) <= 3 * 2  # bounded: attempts per part, at most two parts in flight
    assert len(proxy.plan.requests("abort_multipart_upload")) >= 1
    assert direct(s3_bucket) == ([], [])

    proxy.plan.heal()
    again = run(plan)
    assert again.status == Backup.SUCCEEDED, again.error
    assert len(direct(s3_bucket)[0]) == len(STORED_SUFFIXES)


def test_an_upload_cut_off_by_an_endpoint_going_down_is_failed_and_its_upload_cleaned(
    big_database, proxy, bucket, s3_bucket
):
    remote = s3_destination(bucket)
    plan = plan_for(big_database, [remote])
    proxy.plan.down(after="upload_part")  # as soon as the first part has gone through

    backup = run(plan)

    assert backup.status == Backup.FAILED
    # Cut while streaming ("Every destination failed: …") or while committing the last part.
    reason = f"Off-site S3: Lost the connection to S3 endpoint {proxy.url} for bucket {s3_bucket['bucket']}"
    assert backup.error in (reason, f"Every destination failed: {reason}")
    assert_no_secret(backup)
    assert [r.action for r in proxy.plan.requests("upload_part")][:2] == ["forward", "reset"]
    assert {r.action for r in proxy.plan.requests("abort_multipart_upload")} == {"reset"}
    keys, uploads = direct(s3_bucket)
    assert keys == [] and len(uploads) == 1  # the abort could not get through

    # Once the endpoint is back, the destination's orphan scan offers the
    # unfinished upload, and removing it aborts it.
    proxy.plan.heal()
    found = orphans.scan(remote)
    assert [(o.kind, o.key) for o in found] == [(orphans.PARTIAL, backup.object_key)]
    removed, errors = orphans.remove("test", remote, [found[0].token])
    assert removed == [backup.object_key] and errors == []
    assert direct(s3_bucket) == ([], [])

    again = run(plan)
    assert again.status == Backup.SUCCEEDED, again.error


def connections_to(port, monkeypatch):
    """The connections the S3 client tries to open to `port` (a list that grows)."""
    from urllib3.util import connection

    tried = []
    create_connection = connection.create_connection

    def counted(address, *args, **kwargs):
        if address[1] == port:
            tried.append(address)
        return create_connection(address, *args, **kwargs)

    monkeypatch.setattr(connection, "create_connection", counted)
    return tried


def test_an_unreachable_endpoint_is_reported_clearly_and_fails_a_backup_fast(
    big_database, admin_client, s3_bucket, monkeypatch, settings
):
    port = pg.free_port()
    nowhere = f"http://127.0.0.1:{port}"
    page = admin_client.post(
        "/destinations/test/",
        {
            "name": "S",
            "kind": "s3",
            "bucket": s3_bucket["bucket"],
            "endpoint_url": nowhere,
            "region": "us-east-1",
            "access_key_id": "testing",
            "secret_access_key": "testing-secret-xyz",
        },
    ).content.decode()
    assert f"Cannot reach S3 endpoint {nowhere}" in page and "testing-secret-xyz" not in page

    plan = plan_for(big_database, [s3_destination({**s3_bucket, "endpoint_url": nowhere, "secret_access_key": SECRET})])
    tried = connections_to(port, monkeypatch)
    backup = run(plan)

    assert backup.status == Backup.FAILED
    # Fast: two requests (start the upload, look for unfinished ones to clean up), each given up after a
    # bounded number of attempts, S3_MAX_ATTEMPTS in all (the first try included).
    assert 0 < len(tried) <= 2 * settings.S3_MAX_ATTEMPTS
    assert f"Off-site S3: Cannot reach S3 endpoint {nowhere}" in backup.error, backup.error
    assert_no_secret(backup)


@pytest.mark.parametrize("retry_answer", ["completed again", "NoSuchUpload"])
def test_a_completion_whose_answer_is_lost_is_neither_a_failure_nor_a_duplicate(
    big_database, proxy, bucket, s3_bucket, retry_answer
):
    plan = plan_for(big_database, [s3_destination(bucket)], verify=True)
    # S3 completes the upload, then the connection breaks before the answer.
    # Real S3 (and moto) answer the retry with success again; others say the
    # upload does not exist any more.
    proxy.plan.add("reset_after_forward", "complete_multipart_upload")
    if retry_answer == "NoSuchUpload":
        proxy.plan.add("nosuchupload", "complete_multipart_upload")

    backup = run(plan)

    assert backup.status == Backup.SUCCEEDED, backup.error
    assert proxy.plan.pending() == []
    keys, uploads = direct(s3_bucket)
    assert keys == sorted(f"strongroom/{backup.object_key}{suffix}" for suffix in STORED_SUFFIXES)
    assert uploads == []
    check = backup.verifications.get()
    assert check.status == "passed" and check.evidence["copies"][0]["sha256"] == backup.sha256


def test_a_lost_completion_of_someone_elses_parts_stays_a_failure(big_database, proxy, bucket, s3_bucket):
    plan = plan_for(big_database, [s3_destination(bucket)])
    # The retry is told NoSuchUpload although nothing was completed: no object
    # is there to take for ours, so the copy fails and leaves nothing.
    proxy.plan.add("nosuchupload", "complete_multipart_upload")

    backup = run(plan)

    assert backup.status == Backup.FAILED
    assert "Off-site S3" in backup.error and "NoSuchUpload" in backup.error
    assert direct(s3_bucket) == ([], [])
