"""The apps above the catalog reach it only through what they register in
their AppConfig.ready() (catalog/registry.py): the tick, the nightly prune,
the monitoring and the old task paths still do all they did."""

import pytest
from django.urls import reverse

from catalog import registry, tasks
from catalog.alerts import hooks
from catalog.models import BASE_BACKUP_FORMAT
from pitr import basebackups, restores

pytestmark = pytest.mark.django_db


def test_it_runs_every_apps_tick_steps_before_the_monitoring():
    result = tasks.tick()
    assert list(result) == [
        "swept",
        "swept_verifications",
        "queued_verifications",
        "redispatched",
        "swept_restores",
        "drills",
        "swept_pitr_restores",
        "base_backups_wal_complete",
        "lockouts_ended",
        "abandoned_imports",
        "monitoring",
    ]
    assert result["drills"] == {"swept": [], "queued": []}
    assert set(result["monitoring"]) == {
        "refreshed",
        "late_or_down",
        "storage_full",
        "stuck",
        "key_rotation_due",
        "drills_overdue",
        "wal",
    }


def test_it_runs_the_registered_checks_each_on_its_own(monkeypatch):
    def broken(now):
        raise RuntimeError("a bug in one check")

    monkeypatch.setitem(registry.periodic_checks, "broken", broken)
    result = hooks.periodic_checks()
    assert result["broken"] is None and result["wal"] == [] and result["drills_overdue"] == []


def test_it_reports_a_nightly_step_only_when_it_did_something(monkeypatch):
    assert "wal" not in tasks.prune_nightly()  # no source under continuous protection
    monkeypatch.setitem(registry.nightly_steps, "wal", lambda: {7: 3})
    assert tasks.prune_nightly()["wal"] == {7: 3}


def test_it_keeps_the_old_path_of_the_pitr_restore_task(monkeypatch):
    claimed = []
    monkeypatch.setattr(restores, "run_pitr_restore", lambda job_id: claimed.append(job_id))
    assert tasks.run_pitr_restore(7) == "not claimed"  # passed on to pitr.tasks.run_pitr_restore
    assert claimed == [7]


def test_it_has_pitr_s_steps_for_base_backups_and_none_for_others():
    steps = registry.steps_of(BASE_BACKUP_FORMAT)
    assert (steps.run_problem, steps.copies_durable, steps.waiting_for, steps.imported) == (
        basebackups.protection_problem,
        basebackups.record_wal_bounds,
        basebackups.missing_wal,
        basebackups.import_wal_bounds,
    )
    assert registry.steps_of("custom") is registry.NO_STEPS


def test_it_serves_the_wal_push_at_the_same_path():
    assert reverse("pitr_wal_push", args=[5, "000000010000000000000001"]) == (
        "/api/v1/sources/5/wal/000000010000000000000001"
    )
