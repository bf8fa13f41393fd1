"""A rebuilt catalog's backups belong to their plans again: every manifest
describes its plan (no secret in it), the rebuild makes a missing plan again
from the newest one, paused, in the destinations its copies were found in,
and hands backups to a plan of their name that exists; a plan an
administrator deleted is not brought back."""

import json
from io import StringIO

import pytest
from django.core.management import call_command
from django_q.models import Schedule

from catalog import backup_runs, keyring, rebuild, retention, services
from catalog.engine import crypto, manifest
from catalog.models import AuditEvent, Backup, BackupPlan, Destination, Source
from tests.factories import local_destination, make_plan, pg_source
from tests.harness.sample_db import create_tricky_database

pytestmark = pytest.mark.django_db(transaction=True)

SOURCE_PASSWORD = "never-in-a-manifest-7f3a"  # the test server trusts; the password is only carried
SETTINGS = dict(
    schedule="15 2 * * 1-5",
    format="plain",
    compression="gzip",
    compression_level=8,
    dump_jobs=5,  # kept by a plain-format plan too, for when it changes to the directory format
    encrypt=True,
    retention_mode="gfs",
    keep_daily=9,
    keep_weekly=5,
    keep_monthly=4,
    keep_yearly=3,
    keep_last=6,
    keep_days=11,
    keep_minimum=2,
    keep_manual_days=14,
    verify_new_backups=False,
    restore_test_days=3,
    checksum_all_days=12,
    size_tolerance_percent=40,
)


@pytest.fixture
def source(pg_database):
    create_tricky_database(pg_database, big_rows=50)
    return pg_source(pg_database, password=SOURCE_PASSWORD)


@pytest.fixture
def plan(source, tmp_path):
    destinations = [local_destination(tmp_path / "disk"), local_destination(tmp_path / "second", name="Second disk")]
    return make_plan(source, destinations, name="Weekday nights", **SETTINGS)


def run(plan, label=""):
    backup = backup_runs.start_backup("test", plan, label=label)
    backup.refresh_from_db()
    assert backup.status == Backup.SUCCEEDED, backup.error
    return backup


def lose_the_catalog(tmp_path, *names):
    """Every row is gone; the storage and the key directory are not. The
    administrator adds the destinations again."""
    call_command("flush", interactive=False, verbosity=0)
    for name in names or ("Local disk", "Second disk"):
        local_destination(tmp_path / {"Local disk": "disk", "Second disk": "second"}[name], name=name)


def rebuild_catalog():
    out, err = StringIO(), StringIO()
    call_command("rebuild_catalog", stdout=out, stderr=err)
    return out.getvalue(), err.getvalue()


def manifest_path(tmp_path, backup):
    return tmp_path / "disk" / manifest.manifest_key_for(backup.object_key)


def signed_again(path, change):
    """The manifest changed by `change(data)` and signed again with its key, as
    another version of Strongroom might have written it."""
    data = json.loads(path.read_text())
    del data["hmac"]
    change(data)
    master = keyring.master_key(data["manifest_key_id"])
    path.write_bytes(manifest.dumps(manifest.sign_manifest(data, crypto.derive_manifest_key(master))))


def as_an_older_version_wrote_it(path):
    """The manifest without the plan's description."""
    signed_again(path, lambda data: data.pop("plan_definition"))


def test_the_manifest_describes_the_plan_without_a_secret(plan, tmp_path):
    backup = run(plan)

    text = manifest_path(tmp_path, backup).read_text()
    assert json.loads(text)["plan_definition"] == {
        **SETTINGS,
        "name": "Weekday nights",
        "enabled": True,
        "export_tables": [],
        "export_sets": [],
        "created_at": plan.created_at.isoformat(),
    }
    assert SOURCE_PASSWORD not in text and plan.source.secret_token not in text


def test_a_lost_plan_comes_back_paused_as_its_newest_manifest_describes_it(plan, tmp_path):
    older = run(plan)
    plan.keep_last, plan.schedule = 4, "30 1 * * *"  # changed between two backups: the newest manifest says so
    services.save_plan("test", plan, changed_fields=["keep_last", "schedule"])
    newer = run(plan)
    created_at = plan.created_at

    lose_the_catalog(tmp_path)
    out, err = rebuild_catalog()

    assert err == ""
    again = BackupPlan.objects.get()
    assert {name: getattr(again, name) for name in SETTINGS} == {**SETTINGS, "keep_last": 4, "schedule": "30 1 * * *"}
    assert (again.name, again.source, again.created_at) == ("Weekday nights", Source.objects.get(), created_at)
    assert not again.enabled and not Schedule.objects.filter(name=again.schedule_name()).exists()
    assert sorted(d.name for d in again.destinations.all()) == ["Local disk", "Second disk"]
    assert set(again.backups.values_list("pk", flat=True)) == {older.pk, newer.pk}
    assert (
        f"Plan Weekday nights (Inventory DB): recreated PAUSED as the manifest of backup {newer.pk} describes "
        "it; 2 backups belong to it again; destinations: Local disk, Second disk. Review it, then resume it."
    ) in out
    assert "Source Inventory DB: recreated without its password; set it (Sources, Edit) before resuming" in out
    event = AuditEvent.objects.get(action="plan.recreate")
    assert (
        event.actor_label,
        event.object_id,
        event.changes["enabled"],
        event.changes["was_enabled"],
        event.changes["keep_last"],
        event.changes["backups"],
    ) == ("rebuild_catalog command", str(again.pk), False, True, 4, 2)
    assert SOURCE_PASSWORD not in json.dumps(event.changes)

    # Read again: nothing changes and nothing more is said.
    events = AuditEvent.objects.count()
    out, err = rebuild_catalog()
    assert (err, out.count("\n"), AuditEvent.objects.count()) == ("", 2, events)
    assert "0 imported, 0 copies added, 2 already known, 0 refused" in out

    # Reviewed and resumed through the service the plan form uses, it runs again.
    source = Source.objects.get()
    services.save_source("test", source, changed_fields=["password"], secrets={"password": SOURCE_PASSWORD})
    again.enabled = True
    services.save_plan("test", again, changed_fields=["enabled"])
    assert Schedule.objects.filter(name=again.schedule_name()).exists()
    assert run(again).copies.count() == 2


def test_a_plan_made_paused_before_the_loss_says_so(plan, tmp_path):
    plan.enabled = False
    services.save_plan("test", plan, changed_fields=["enabled"])
    run(plan)

    lose_the_catalog(tmp_path)
    out, _ = rebuild_catalog()

    assert "describes it, where it was paused already; 1 backup belongs to it again" in out
    assert AuditEvent.objects.get(action="plan.recreate").changes["was_enabled"] is False


def test_manifests_older_than_plan_descriptions_give_a_plan_that_keeps_everything(plan, tmp_path):
    backup = run(plan)
    as_an_older_version_wrote_it(manifest_path(tmp_path, backup))

    lose_the_catalog(tmp_path, "Local disk")
    out, err = rebuild_catalog()

    assert err == "" and "Local disk: 1 imported" in out
    again = BackupPlan.objects.get()
    # Stored as its backup was; the schedule is the default, and nothing is pruned until someone sets a rule.
    assert (again.name, again.format, again.compression, again.encrypt, again.enabled) == (
        "Weekday nights",
        "plain",
        "gzip",
        True,
        False,
    )
    assert again.retention_policy() == retention.Policy(mode=retention.DAYS, days=36500, manual_days=36500)
    assert list(again.backups.all()) == [Backup.objects.get()]
    assert (
        "recreated PAUSED with the rebuild's defaults (its manifests are older than the plan's description in "
        "them): set its schedule and retention, which keeps every backup until you do"
    ) in out
    assert AuditEvent.objects.get(action="plan.recreate").changes["was_enabled"] is None


def test_a_description_that_cannot_be_used_gives_the_defaults_and_says_why(plan, tmp_path):
    backup = run(plan)
    signed_again(
        manifest_path(tmp_path, backup),
        lambda data: data["plan_definition"].update(schedule="every night", keep_last="some"),
    )

    lose_the_catalog(tmp_path, "Local disk")
    out, err = rebuild_catalog()

    assert err == "" and "Local disk: 1 imported" in out
    again = BackupPlan.objects.get()
    assert (again.schedule, again.retention_mode, again.enabled) == ("0 3 * * *", retention.DAYS, False)
    assert "with the rebuild's defaults (the manifest's description of it cannot be used: keep_last: " in out


def test_a_description_from_before_compression_levels_gives_the_default_level(plan, tmp_path):
    backup = run(plan)
    assert backup.compression_level == 8

    def before_levels(data):
        del data["compression_level"], data["plan_definition"]["compression_level"]

    signed_again(manifest_path(tmp_path, backup), before_levels)

    lose_the_catalog(tmp_path, "Local disk")
    out, err = rebuild_catalog()

    assert err == "" and "Local disk: 1 imported" in out
    again = BackupPlan.objects.get()
    assert {name: getattr(again, name) for name in SETTINGS} == {**SETTINGS, "compression_level": None}
    assert again.effective_compression_level() == 6
    # Every backup was compressed at the default level before levels were recorded.
    assert Backup.objects.get().compression_level == 6


def test_a_level_the_compression_does_not_have_is_not_taken_from_a_manifest(plan, tmp_path):
    backup = run(plan)

    def out_of_range(data):
        data["compression_level"] = 15
        data["plan_definition"]["compression_level"] = 15

    signed_again(manifest_path(tmp_path, backup), out_of_range)

    lose_the_catalog(tmp_path, "Local disk")
    out, err = rebuild_catalog()

    assert err == "" and "Local disk: 1 imported" in out
    assert Backup.objects.get().compression_level is None  # unknown rather than wrong
    assert BackupPlan.objects.get().retention_mode == retention.DAYS  # the rebuild's defaults
    assert "the manifest's description of it cannot be used: compression_level: A gzip level is from 1 to 9" in out


def test_a_description_from_before_dump_jobs_gives_two_jobs(plan, tmp_path):
    backup = run(plan)
    signed_again(manifest_path(tmp_path, backup), lambda data: data["plan_definition"].pop("dump_jobs"))

    lose_the_catalog(tmp_path, "Local disk")
    out, err = rebuild_catalog()

    assert err == "" and "as the manifest of backup" in out
    again = BackupPlan.objects.get()
    assert {name: getattr(again, name) for name in SETTINGS} == {**SETTINGS, "dump_jobs": 2}
    assert AuditEvent.objects.get(action="plan.recreate").changes["dump_jobs"] == 2


def test_a_number_of_dump_jobs_out_of_bounds_is_not_taken_from_a_manifest(plan, tmp_path):
    backup = run(plan)
    signed_again(manifest_path(tmp_path, backup), lambda data: data["plan_definition"].update(dump_jobs=33))

    lose_the_catalog(tmp_path, "Local disk")
    out, err = rebuild_catalog()

    assert err == "" and "Local disk: 1 imported" in out
    again = BackupPlan.objects.get()
    assert (again.dump_jobs, again.retention_mode) == (2, retention.DAYS)  # the rebuild's defaults
    assert "the manifest's description of it cannot be used: dump_jobs: " in out


def test_backups_rebuilt_without_their_plan_are_handed_to_it_by_the_next_rebuild(plan, tmp_path):
    older, newer = run(plan), run(plan)
    as_an_older_version_wrote_it(manifest_path(tmp_path, older))
    as_an_older_version_wrote_it(manifest_path(tmp_path, newer))
    lose_the_catalog(tmp_path, "Local disk")
    # What a rebuild made before plans came back: the backups, and no plan.
    rebuild_catalog()
    Backup.objects.update(plan=None)
    BackupPlan.objects.all().delete()

    # The administrator made the plan again by hand, and reads the manifests again.
    by_hand = make_plan(
        Source.objects.get(), list(Destination.objects.all()), name="Weekday nights", keep_last=1, retention_mode="last"
    )
    out, err = rebuild_catalog()

    assert err == "" and "Plan Weekday nights (Inventory DB): 2 backups handed to the existing plan." in out
    assert set(by_hand.backups.values_list("pk", flat=True)) == {older.pk, newer.pk}
    assert AuditEvent.objects.get(action="plan.adopt").changes == {"backups": 2}
    assert BackupPlan.objects.get().keep_last == 1  # the administrator's plan, untouched


def test_a_deleted_plan_is_not_brought_back(plan, tmp_path):
    backup = run(plan)
    services.delete_plan("test", plan)
    assert Backup.objects.get(pk=backup.pk).plan is None

    out, err = rebuild_catalog()

    assert err == "" and not BackupPlan.objects.exists()
    assert "Plan Weekday nights (Inventory DB): the plan was deleted (by test on " in out
    assert "1 backup stays without a plan, and retention does not prune them" in out


def test_a_name_taken_by_another_sources_plan_leaves_the_backups_without_a_plan(plan, tmp_path, pg_database):
    run(plan)
    lose_the_catalog(tmp_path, "Local disk")
    other = pg_source(pg_database, name="Other DB")
    make_plan(other, list(Destination.objects.all()), name="Weekday nights")

    out, err = rebuild_catalog()

    assert err == "" and "Local disk: 1 imported" in out
    assert Backup.objects.get().plan is None and BackupPlan.objects.get().source == other
    assert (
        "Plan Weekday nights (Inventory DB): 1 backup stays without a plan, because the name belongs to a plan "
        "of Other DB. Rename that plan and run the rebuild again."
    ) in out


def test_an_export_plan_comes_back_with_its_tables(source, tmp_path):
    tables = [{"schema": "public", "name": "big_ledger", "where": "amount > 0"}]
    sets = [{"label": "measurements", "pattern": "public.measurements*"}]
    plan = make_plan(
        source,
        [local_destination(tmp_path / "disk")],
        name="Ledger export",
        format="csv",
        export_tables=tables,
        export_sets=sets,
        verify_new_backups=False,
    )
    run(plan)

    lose_the_catalog(tmp_path, "Local disk")
    rebuild_catalog()

    again = BackupPlan.objects.get()
    assert (again.format, again.export_tables, again.export_sets, again.enabled) == ("csv", tables, sets, False)


def test_rebuild_from_one_destination_settles_plans_too(plan, tmp_path):
    backup = run(plan)
    lose_the_catalog(tmp_path, "Second disk")

    report = rebuild.rebuild_from("test", Destination.objects.get())

    assert report.imported == [backup.pk]
    again = Backup.objects.get().plan
    assert [d.name for d in again.destinations.all()] == ["Second disk"] and not again.enabled
