"""The disaster after which people find out whether their backups were real:
the metadata database is lost. The storage (a local directory and an S3
bucket) and the master key file, which the DBA keeps apart, survive. The
administrator reinstalls, adds the destinations again, runs the rebuild the
README tells them to run, and must find every backup as it was (times, pins,
legal holds with their reasons, labels, row counts, partitions), in its plan
made again, paused, as its newest manifest describes it; the saved key file
must be the active key again (no second file to keep safe); retention must
not take the pinned or held backups; and with the source database gone too,
the pinned backup must restore from the rebuilt catalog to exactly what was
backed up. Real PostgreSQL (the tests' corpus of awkward schemas), the moto
S3 server, encryption on."""

import shutil
import uuid
from io import StringIO
from pathlib import Path

import pytest
from django.conf import settings as django_settings
from django.core.management import call_command
from django.utils import timezone

from catalog import backup_runs, lifecycle, services, tasks
from catalog.engine import manifest
from catalog.models import AuditEvent, Backup, BackupPlan, Copy, Destination, Key, Source, Verification
from restore.models import RestoreJob
from tests.corpus import create_corpus, damage, diff, drop_corpus_roles, snapshot
from tests.factories import local_destination, make_plan, pg_source, s3_destination
from tests.harness import pg, s3
from tests.harness.sample_db import create_tricky_database
from tests.support import files_under, restore_now

pytestmark = pytest.mark.django_db(transaction=True)

# What a backup is in the catalog, field by field, compared before the loss and
# after the rebuild (Backup.roles and globals_sha256 apart, as they may still be empty).
BACKUP_FIELDS = (
    "source_id",
    "label",
    "trigger",
    "status",
    "format",
    "compression",
    "encrypted",
    "key_id",
    "object_key",
    "raw_bytes",
    "stored_bytes",
    "sha256",
    "server_version",
    "tool_version",
    "table_counts",
    "partitions",
    "pinned",
    "legal_hold",
    "hold_reason",
    "hold_changed_at",
    "created_at",
    "started_at",
    "finished_at",
    "pruned_at",
)

# A database restored under a new name gets the server's defaults for the
# database object itself (owner, GRANT ... ON DATABASE, comment, ALTER
# DATABASE ... SET): docs/RESTORE_MATRIX.md, "Not yet". Once a backup keeps
# its globals (Backup.globals_sha256), those must come back too.
DATABASE_LEVEL = ("database owner", "database privileges", "database settings", "database comment")


@pytest.fixture
def corpus(pg_database, pg_server):
    built = create_corpus(pg_database, size="small")
    yield built
    drop_corpus_roles(pg_server, built)


@pytest.fixture
def other_database(pg_server):
    name = f"sr_rebuilt_{uuid.uuid4().hex[:8]}"
    yield name
    pg.drop_database(name)


def run(plan, label=""):
    backup = backup_runs.start_backup("test", plan, label=label, trigger="schedule")  # tasks run inline in tests
    backup.refresh_from_db()
    assert backup.status == Backup.SUCCEEDED, backup.error
    return backup


def catalog_state():
    """Every backup as the catalog knows it, with its copies, by id."""
    return {
        b.pk: {
            **{name: getattr(b, name) for name in BACKUP_FIELDS},
            # (A copy's durable_at comes back as the backup's finish: the manifest has no instant per copy.)
            "copies": sorted(
                (c.destination.name, c.key, c.manifest_key, c.size, c.sha256, c.status, c.durable_at is not None)
                for c in b.copies.select_related("destination")
            ),
        }
        for b in Backup.objects.all()
    }


def differences_between(before, after, **expected_changes):
    """Field by field, in words: [] when the catalog is as it was (but for `expected_changes`)."""
    lines = [f"backup {pk}: missing after" for pk in sorted(before.keys() - after.keys())]
    lines += [f"backup {pk}: only after" for pk in sorted(after.keys() - before.keys())]
    for pk in sorted(before.keys() & after.keys()):
        was = {**before[pk], **expected_changes}
        lines += [
            f"backup {pk} {name}: {was[name]!r} before, {after[pk][name]!r} after"
            for name in was
            if was[name] != after[pk][name]
        ]
    return lines


def lose_the_metadata_database():
    """What a lost database loses: every row of every table, sequences back
    to 1, as in a freshly migrated database after a reinstall."""
    call_command("flush", interactive=False, verbosity=0)
    for model in (Backup, Copy, Source, BackupPlan, Destination, Verification, AuditEvent, Key, RestoreJob):
        assert model.objects.count() == 0, model


def reinstall_with_the_saved_key_files(settings, tmp_path, key_ids):
    """A new machine: an empty key directory, into which the DBA copies the
    master key files kept elsewhere."""
    new_dir = tmp_path / "keys-after-reinstall"
    new_dir.mkdir(mode=0o700)
    for key_id in key_ids:
        shutil.copy2(Path(django_settings.KEY_DIR) / f"{key_id}.key", new_dir / f"{key_id}.key")
    settings.KEY_DIR = str(new_dir)


def rebuild_catalog():
    out, err = StringIO(), StringIO()
    call_command("rebuild_catalog", stdout=out, stderr=err)
    return out.getvalue(), err.getvalue()


def stored_keys(backup, root, s3_bucket):
    """The object, manifest and hold record of a backup, in each destination."""
    manifest_key = manifest.manifest_key_for(backup.object_key)
    wanted = [backup.object_key, manifest_key]
    if backup.hold_changed_at:
        wanted.append(manifest.hold_key_for(manifest_key))
    local = set(files_under(root))
    in_s3 = set(s3.all_keys(s3_bucket["endpoint_url"], s3_bucket["bucket"]))
    return {"local": [k for k in wanted if k in local], "s3": [k for k in wanted if "strongroom/" + k in in_s3]}, wanted


def test_it_rebuilds_the_lost_catalog_keeps_pins_and_holds_and_restores_the_pinned_backup_exactly(
    corpus, tmp_path, s3_bucket, settings, other_database
):
    # --- before: a plan writing to a directory and a bucket, encrypted, several backups ---
    disk_root = tmp_path / "disk"
    plan = make_plan(
        pg_source(corpus.conninfo),
        [local_destination(disk_root), s3_destination(s3_bucket)],
        retention_mode="last",
        keep_last=10,
        verify_new_backups=False,
        schedule="40 1 * * *",
        keep_manual_days=0,
    )  # the labelled backup too is the rule's at once: only holds keep here
    at_pinned = snapshot(corpus.conninfo)
    pinned = run(plan)
    damage(corpus.conninfo)  # later backups hold other rows: the restore must bring back the pinned one's
    held = run(plan)
    labelled = run(plan, label="pre-migration")
    newest = run(plan)
    assert lifecycle.pin_backup("test", pinned, "Quarter-end close, keep for the auditors") == []
    assert lifecycle.pin_backup("test", held, "Litigation 2026-17: keep everything", legal_hold=True) == []

    before = catalog_state()
    assert len(before) == 4 and all(row["encrypted"] and row["key_id"] for row in before.values())
    assert all(len(row["copies"]) == 2 and {c[5] for c in row["copies"]} == {Copy.DURABLE} for row in before.values())
    assert len({row["sha256"] for row in before.values()}) == 4
    assert before[pinned.pk]["created_at"] != before[pinned.pk]["started_at"]  # queued, then taken: two instants
    # The pinned backup counted the corpus's rows (an INHERITS parent's count takes in its children's rows)
    # and knows its partitioned tables' leaves.
    counts = before[pinned.pk]["table_counts"]
    assert {t: counts[t] for t in corpus.row_counts if t not in corpus.inheritance_children} == {
        t: n for t, n in corpus.row_counts.items() if t not in corpus.inheritance_children
    }
    partitioned = [t for t in corpus.partitions if not any(t in kids for kids in corpus.partitions.values())]
    assert before[pinned.pk]["partitions"] == {t: sorted(corpus.leaf_partitions(t)) for t in partitioned}
    assert before[pinned.pk]["table_counts"] != before[held.pk]["table_counts"]  # the damage is in the later ones
    globals_before = {b.pk: (b.roles, b.globals_sha256) for b in Backup.objects.all()}
    # What the plan's retention keeps when tightened to the last one: the hold state decides for two of them.
    plan.keep_last = 1
    plan.save(update_fields=["keep_last"])
    kept_before = {row.backup.pk: row.decision.explain() for row in lifecycle.preview(plan) if row.keep}
    assert kept_before == {pinned.pk: "pinned", held.pk: "legal hold", newest.pk: "last #1"}
    key_ids = {row["key_id"] for row in before.values()}

    # --- the metadata database is lost; the storage and the key file are not ---
    lose_the_metadata_database()
    reinstall_with_the_saved_key_files(settings, tmp_path, key_ids)
    # The administrator adds the destinations again (same directory, same bucket and prefix) ...
    local_destination(disk_root)
    s3_destination(s3_bucket)
    # ... whose S3 secret is sealed with the saved master key, not with a new key file to keep safe too.
    (saved_key,) = key_ids
    assert list(Key.objects.values_list("key_id", "is_active")) == [(saved_key, True)]
    assert sorted(p.name for p in Path(django_settings.KEY_DIR).iterdir()) == [f"{saved_key}.key"]
    # ... and runs the rebuild as the README says.
    out, err = rebuild_catalog()

    assert err == ""
    assert "Local disk: 4 imported, 0 copies added, 0 already known, 0 refused" in out
    assert "Off-site S3: 0 imported, 4 copies added, 0 already known, 0 refused" in out
    assert list(Key.objects.values_list("key_id", "is_active")) == [(saved_key, True)]
    assert sorted(p.name for p in Path(django_settings.KEY_DIR).iterdir()) == [f"{saved_key}.key"]
    rebuilt = catalog_state()
    source = Source.objects.get()
    # The recreated source gets a new id; everything else is as it was, to the microsecond.
    changed = differences_between(before, rebuilt, source_id=source.pk)
    assert changed == [], "\n".join(changed)
    assert (source.engine, source.host, source.port, source.dbname, source.user) == (
        "postgresql",
        corpus.conninfo["host"],
        corpus.conninfo["port"],
        corpus.conninfo["dbname"],
        corpus.conninfo["user"],
    )
    assert Backup.objects.get(pk=labelled.pk).label == "pre-migration"
    assert (Backup.objects.get(pk=pinned.pk).hold_reason, Backup.objects.get(pk=held.pk).hold_reason) == (
        "Quarter-end close, keep for the auditors",
        "Litigation 2026-17: keep everything",
    )
    # The keys that open the backups are known again.
    assert key_ids <= set(Key.objects.values_list("key_id", flat=True))
    assert sorted(e.changes["hold"] for e in AuditEvent.objects.filter(action="backup.import")) == sorted(
        ["pinned", "legal hold", "none", "none"] * 2
    )
    # The roles a backup needs and its globals' checksum, once backups record them (empty before that).
    for pk, (roles, globals_sha256) in globals_before.items():
        rebuilt_backup = Backup.objects.get(pk=pk)
        if roles:
            assert rebuilt_backup.roles == roles
        if globals_sha256:
            assert rebuilt_backup.globals_sha256 == globals_sha256

    # --- the plan is back, paused, as the newest manifest describes it, with every rebuilt backup ---
    again = BackupPlan.objects.get()
    assert (
        again.name,
        again.source,
        again.enabled,
        again.schedule,
        again.retention_mode,
        again.keep_last,
        again.encrypt,
        again.verify_new_backups,
    ) == ("Nightly", source, False, "40 1 * * *", "last", 10, True, False)
    assert sorted(d.name for d in again.destinations.all()) == ["Local disk", "Off-site S3"]
    assert set(again.backups.values_list("pk", flat=True)) == set(before)
    assert (
        f"Plan Nightly (Inventory DB): recreated PAUSED as the manifest of backup {newest.pk} describes it; "
        "4 backups belong to it again; destinations: Local disk, Off-site S3. Review it, then resume it."
    ) in out
    assert "Source Inventory DB: recreated without its password; set it (Sources, Edit) before resuming" in out
    assert AuditEvent.objects.get(action="plan.recreate").changes["was_enabled"] is True

    # --- retention over the rebuilt catalog: the pinned and the held backup stay ---
    # The administrator reviews the plan: "keep the last one" (tightened after its last backup, so no
    # manifest knew), resumes it, and the nightly prune runs.
    again.keep_last, again.enabled = 1, True
    services.save_plan("admin", again, changed_fields=["keep_last", "enabled"])
    # The plan's rule over the rebuilt backups keeps what it kept before the loss, for the same reasons ...
    assert {row.backup.pk: row.decision.explain() for row in lifecycle.preview(again) if row.keep} == kept_before
    # ... and the nightly prune applies it: what the rule drops goes ...
    tasks.prune_nightly()
    assert [b.pk for b in Backup.objects.filter(pruned_at__isnull=False)] == [labelled.pk]
    # ... and even asked to (a preview made before the pin was known), the prune refuses the pinned and the held one.
    now = timezone.now()
    for backup in (pinned, held):
        assert lifecycle.prune_backup("retention", backup.pk, "older than the last 1", now)[0] == "skipped"
        kept = Backup.objects.get(pk=backup.pk)
        assert kept.pruned_at is None and kept.hold()
        assert set(kept.copies.values_list("status", flat=True)) == {Copy.DURABLE}
        found, wanted = stored_keys(kept, disk_root, s3_bucket)
        assert found == {"local": wanted, "s3": wanted}
    # The labelled one was not held: everything stored under its name is gone, in both places.
    assert Copy.objects.filter(backup=labelled.pk).exclude(status=Copy.PRUNED).count() == 0
    assert not any(k.startswith(labelled.object_key) for k in files_under(disk_root))
    assert not any(labelled.object_key in k for k in s3.all_keys(s3_bucket["endpoint_url"], s3_bucket["bucket"]))
    # New backups work after the rebuild, with ids after the imported ones.
    assert run(again).pk > max(before)

    # --- the source database is gone too: the pinned backup comes back from the rebuilt catalog ---
    pg.drop_database(corpus.conninfo["dbname"])
    pinned = Backup.objects.get(pk=pinned.pk)
    job = restore_now(pinned, target="new", database=other_database)

    assert job.status == RestoreJob.SUCCEEDED, job.summary
    differences = diff(at_pinned, snapshot({**corpus.conninfo, "dbname": other_database}))
    if not pinned.globals_sha256:  # taken before backups kept their database's properties
        differences = [line for line in differences if not line.startswith(DATABASE_LEVEL)]
    assert differences == [], "\n".join(differences)


def test_a_plan_made_again_by_the_rebuild_applies_its_retention_to_the_rebuilt_backups(pg_database, tmp_path):
    # Found by this file's first version: the rebuild made sources again but not plans, so every rebuilt
    # backup had no plan, and retention (prune_plan/prune_all, which go plan by plan) never pruned them.
    create_tricky_database(pg_database, big_rows=50)
    plan = make_plan(
        pg_source(pg_database),
        [local_destination(tmp_path / "disk")],
        retention_mode="last",
        keep_last=10,
        verify_new_backups=False,
    )
    older, newer = run(plan), run(plan)

    lose_the_metadata_database()
    local_destination(tmp_path / "disk")
    out, err = rebuild_catalog()
    assert err == "" and "Local disk: 2 imported" in out
    again = BackupPlan.objects.get()
    assert (again.name, again.enabled, again.retention_mode, again.keep_last) == (plan.name, False, "last", 10)
    assert [d.name for d in again.destinations.all()] == ["Local disk"]
    assert set(again.backups.values_list("pk", flat=True)) == {older.pk, newer.pk}
    # Paused, it still applies its rule, as before the loss: both are kept.
    tasks.prune_nightly()
    assert Backup.objects.filter(pruned_at__isnull=True).count() == 2
    # The administrator reviews it, keeping the last backup only, and resumes it.
    again.keep_last, again.enabled = 1, True
    services.save_plan("admin", again, changed_fields=["keep_last", "enabled"])
    tasks.prune_nightly()

    assert Backup.objects.get(pk=newer.pk).pruned_at is None
    assert Backup.objects.get(pk=older.pk).pruned_at is not None
