"""Every restore mode over the corpus of awkward schemas (tests/corpus): what
comes back is compared with the original by pg_dump --schema-only with
owners and grants, the sorted rows of every table, sequences, materialized
views and large objects."""

import uuid

import pytest

from catalog import services, verification
from catalog.models import Backup, Verification
from tests.catalog.helpers import local_destination, make_plan, pg_source, restore_now
from tests.corpus import create_corpus, damage, diff, drop_corpus_roles, snapshot
from tests.harness import pg

pytestmark = pytest.mark.django_db(transaction=True)

# A database restored under a new name has the server's defaults for the
# database itself (owner, grants, comment, settings): pg_dump writes those
# only for a restore under the original name (--create). A whole replace
# keeps the replaced database's; see test_disasters.
DATABASE_LEVEL = ("database owner", "database privileges", "database settings", "database comment")


@pytest.fixture
def corpus(pg_database, pg_server):
    built = create_corpus(pg_database)
    yield built
    drop_corpus_roles(pg_server, built)


@pytest.fixture
def backup(corpus, tmp_path):
    plan = make_plan(pg_source(corpus.conninfo), [local_destination(tmp_path / "disk")], verify_new_backups=False)
    backup = services.run_backup(services.create_backup("test", plan).pk)
    assert backup.status == Backup.SUCCEEDED, backup.error
    return backup


@pytest.fixture
def new_name(pg_server):
    name = f"sr_corpus_{uuid.uuid4().hex[:8]}"
    yield name
    pg.drop_database(name)


def within_the_database(differences):
    return [line for line in differences if not line.startswith(DATABASE_LEVEL)]


def test_a_new_database_gets_every_object_row_owner_and_grant_back(corpus, backup, new_name):
    original = snapshot(corpus.conninfo)

    job = restore_now(backup, target="new", database=new_name)

    assert job.status == "succeeded", job.summary
    assert within_the_database(diff(original, snapshot({**corpus.conninfo, "dbname": new_name}))) == []


def test_without_owners_everything_belongs_to_the_restoring_role(corpus, backup, new_name):
    job = restore_now(backup, target="new", database=new_name, without_owners=True)

    assert job.status == "succeeded", job.summary
    restored = snapshot({**corpus.conninfo, "dbname": new_name})
    ownership = [line for line in restored["schema"] if line.startswith(("ALTER", "GRANT", "REVOKE"))]
    assert not any(role in line for line in ownership for role in corpus.roles.values())
    assert restored["tables"] == snapshot(corpus.conninfo)["tables"]


def test_a_server_without_the_backups_roles_is_refused_in_words_and_left_clean(corpus, backup, new_name):
    drop_corpus_roles(pg.ensure_server(), corpus)  # as on a server the roles were never made on
    job = restore_now(backup, target="new", database=new_name)

    assert job.status == "failed"
    assert f"role {corpus.roles['owner']}" in job.summary or "which the target server does not have" in job.summary
    assert "restore without owners and grants" in job.summary


def test_the_test_restore_of_the_corpus_passes_with_no_false_alarm(backup):
    check = verification.run_here(verification.create_verification("test", backup, Verification.RESTORE,
                                                                    enqueue_it=False))

    assert check.status == Verification.PASSED, check.summary
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

