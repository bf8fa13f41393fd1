"""Every restore mode over the corpus of awkward schemas (tests/corpus): what
comes back is compared with the original by pg_dump --schema-only with
owners and grants, the sorted rows of every table, sequences, materialized
views and large objects."""

import uuid

import psycopg
import pytest

from catalog import backup_globals, backup_runs, verification
from catalog.engine import restorers
from catalog.models import AuditEvent, Backup, Verification
from catalog.services import Refused
from tests.corpus import create_corpus, damage, diff, drop_corpus_roles, snapshot
from tests.factories import local_destination, make_plan, pg_source
from tests.harness import pg
from tests.support import restore_now

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def corpus(pg_database, pg_server):
    built = create_corpus(pg_database)
    yield built
    drop_corpus_roles(pg_server, built)


# Both formats pg_restore reads: the custom one, and the directory one that
# several jobs dump at once (stored as a tar archive, unpacked for pg_restore -j).
@pytest.fixture(params=["custom", "directory"])
def backup(corpus, tmp_path, request):
    plan = make_plan(
        pg_source(corpus.conninfo),
        [local_destination(tmp_path / "disk")],
        verify_new_backups=False,
        format=request.param,
        dump_jobs=3,
    )
    backup = backup_runs.run_backup(backup_runs.create_backup("test", plan).pk)
    assert backup.status == Backup.SUCCEEDED, backup.error
    return backup


@pytest.fixture
def new_name(pg_server):
    name = f"sr_corpus_{uuid.uuid4().hex[:8]}"
    yield name
    pg.drop_database(name)


def roles_exist(names):
    with psycopg.connect(**pg.ensure_server(), dbname="postgres") as conn:
        return {name for (name,) in conn.execute("SELECT rolname FROM pg_roles WHERE rolname = ANY(%s)", [list(names)])}


def test_a_new_database_gets_every_object_row_owner_and_grant_back(corpus, backup, new_name):
    original = snapshot(corpus.conninfo)

    job = restore_now(backup, target="new", database=new_name)

    assert job.status == "succeeded", job.summary
    # The database's own owner, grants, comment and settings too, which
    # pg_dump writes only for a restore under the original name.
    assert diff(original, snapshot({**corpus.conninfo, "dbname": new_name})) == []
    assert job.report["database_properties"][0] == f"owner {corpus.roles['owner']}"


def test_the_backup_keeps_the_roles_and_database_properties_encrypted_beside_it(corpus, backup, tmp_path):
    assert set(corpus.roles.values()) <= set(backup.roles)
    stored = (tmp_path / "disk" / (backup.object_key + ".manifest.json.globals")).read_bytes()
    assert corpus.roles["owner"].encode() not in stored  # encrypted like the dump

    document = backup_globals.read(backup)

    assert {role["name"] for role in document["roles"]} == set(backup.roles)
    assert document["database"]["owner"] == corpus.roles["owner"]
    assert f"CREATE ROLE {corpus.roles['reader']};" in document["globals_sql"]


def test_without_owners_everything_belongs_to_the_restoring_role(corpus, backup, new_name):
    job = restore_now(backup, target="new", database=new_name, without_owners=True)

    assert job.status == "succeeded", job.summary
    restored = snapshot({**corpus.conninfo, "dbname": new_name})
    ownership = [line for line in restored["schema"] if line.startswith(("ALTER", "GRANT", "REVOKE"))]
    assert not any(role in line for line in ownership for role in corpus.roles.values())
    assert restored["tables"] == snapshot(corpus.conninfo)["tables"]


def test_a_server_without_the_backups_roles_is_refused_in_words_or_gets_them_from_the_backup(corpus, backup, new_name):
    original = snapshot(corpus.conninfo)
    pg.drop_database(corpus.conninfo["dbname"])
    drop_corpus_roles(pg.ensure_server(), corpus)  # the source and its roles gone, as on a server never given them

    with pytest.raises(Refused) as refused:
        restore_now(backup, target="new", database=new_name)
    assert corpus.roles["owner"] in str(refused.value) and "without owners and grants" in str(refused.value)

    job = restore_now(backup, target="new", database=new_name, create_missing_roles=True)

    assert job.status == "succeeded", job.summary
    assert set(job.report["roles_created"]) == set(corpus.roles.values())
    assert diff(original, snapshot({**corpus.conninfo, "dbname": new_name})) == []  # roles' attributes included
    event = AuditEvent.objects.get(action="restore.roles_created")
    assert set(event.changes["roles"]) == set(corpus.roles.values())


def test_roles_created_for_a_restore_that_fails_are_dropped_again(corpus, backup, new_name, tmp_path):
    pg.drop_database(corpus.conninfo["dbname"])
    drop_corpus_roles(pg.ensure_server(), corpus)
    stored = tmp_path / "disk" / backup.object_key
    data = bytearray(stored.read_bytes())
    data[len(data) // 2] ^= 0xFF  # the only copy is damaged: the restore fails after the roles step
    stored.write_bytes(bytes(data))

    job = restore_now(backup, target="new", database=new_name, create_missing_roles=True)

    assert job.status == "failed"
    assert [step["name"] for step in job.steps][:2] == ["checks", "roles"]
    assert roles_exist(corpus.roles.values()) == set()
    assert job.report["roles_kept_after_failure"] == []


def test_the_test_restore_of_the_corpus_passes_with_no_false_alarm(backup):
    check = verification.run_here(
        verification.create_verification("test", backup, Verification.RESTORE, enqueue_it=False)
    )

    assert check.status == Verification.PASSED, check.summary
    assert check.evidence["owners_and_grants"] is True  # the roles are on the server, so as a real restore does
    assert check.evidence["schema_objects"] == check.evidence["table_of_contents"]
    assert check.evidence["table_of_contents"]["constraints"] > 0


def test_preview_then_merge_bring_back_exactly_what_was_damaged(corpus, backup):
    original = snapshot(corpus.conninfo)
    changes = damage(corpus.conninfo)
    name = corpus.conninfo["dbname"]
    tables = sorted(changes)

    preview = restore_now(backup, target="existing", database=name, mode="preview", tables=tables)

    assert preview.status == "succeeded", preview.summary
    found = {t["table"]: (t["only_in_backup"], t["only_in_target"], t["differ"]) for t in preview.report["tables"]}
    assert found == {t: (len(c.deleted), len(c.inserted), len(c.updated)) for t, c in changes.items()}

    merge = restore_now(backup, target="existing", database=name, mode="merge", tables=tables, confirmed_name=name)

    assert merge.status == "succeeded", merge.summary
    assert merge.report["inserted"] == {t: len(c.deleted) for t, c in changes.items()}
    after = snapshot(corpus.conninfo)
    for table, change in changes.items():  # rows changed or added since are left as they are
        assert set(after["tables"][table]) == set(original["tables"][table]) | set(change.inserted), table


def test_a_new_database_has_the_encoding_and_locale_of_the_one_backed_up(pg_server, tmp_path, new_name):
    source = f"sr_latin1_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(**pg_server, dbname="postgres", autocommit=True) as conn:
        conn.execute(f"CREATE DATABASE {source} TEMPLATE template0 ENCODING 'LATIN1' LC_COLLATE 'C' LC_CTYPE 'C'")
    try:
        with psycopg.connect(**pg_server, dbname=source, autocommit=True) as conn:
            conn.execute(
                "CREATE TABLE menu (dish text PRIMARY KEY); INSERT INTO menu VALUES ('café'), ('crème brûlée')"
            )
        plan = make_plan(
            pg_source({**pg_server, "dbname": source}), [local_destination(tmp_path / "disk")], verify_new_backups=False
        )
        backup = backup_runs.run_backup(backup_runs.create_backup("test", plan).pk)
        assert backup.status == Backup.SUCCEEDED, backup.error
    finally:
        pg.drop_database(source)

    job = restore_now(backup, target="new", database=new_name)

    assert job.status == "succeeded", job.summary
    with psycopg.connect(**pg_server, dbname="postgres") as conn:
        assert conn.execute(
            "SELECT pg_encoding_to_char(encoding), datcollate, datctype FROM pg_database WHERE datname = %s", [new_name]
        ).fetchone() == ("LATIN1", "C", "C")
    with psycopg.connect(**pg_server, dbname=new_name) as conn:
        assert conn.execute("SELECT string_agg(dish, '|' ORDER BY dish) FROM menu").fetchone()[0] == "café|crème brûlée"


def test_a_locale_the_server_lacks_falls_back_to_its_defaults_and_says_so(pg_server):
    name = restorers.scratch_name(0)
    like = {"encoding": "UTF8", "collate": "xx_NOWHERE.UTF-8", "ctype": "xx_NOWHERE.UTF-8"}
    scratch = restorers.ScratchDatabase(pg_server, name, like).create()
    try:
        assert "cannot create a database with the backup's encoding and locale" in scratch.fallback
        assert "xx_NOWHERE" in scratch.fallback
        assert restorers.database_exists(pg_server, name)
    finally:
        scratch.drop()
