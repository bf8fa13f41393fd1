"""`manage.py backup` and `manage.py backups`, as users of django-dbbackup
expect: back up a plan from a script (and wait for it), list what exists."""

import io
import json
import sqlite3
from datetime import timedelta

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError
from django.utils import timezone
from django_q.conf import Conf
from django_q.models import OrmQ

from catalog import services
from catalog.models import AuditEvent, Backup, Source
from tests.factories import local_destination, make_plan

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def plan(tmp_path):
    database = tmp_path / "shop.sqlite3"
    with sqlite3.connect(database) as conn:
        conn.execute("CREATE TABLE orders (id INTEGER PRIMARY KEY)")
        conn.executemany("INSERT INTO orders VALUES (?)", [(i,) for i in range(20)])
    source = services.save_source("test", Source(name="Shop", engine="sqlite", sqlite_path=str(database), port=None))
    return make_plan(source, [local_destination(tmp_path / "disk")], format="sqlite", verify_new_backups=False)


def run(*args):
    out = io.StringIO()
    call_command(*args, stdout=out)
    return out.getvalue()


def test_backup_wait_runs_the_plan_here_and_prints_it_as_json(plan):
    printed = json.loads(run("backup", "--plan", "Nightly", "--label", "pre-migration", "--wait", "--json"))

    backup = Backup.objects.get()
    assert printed["id"] == backup.pk and printed["status"] == "succeeded" == backup.status
    assert printed["label"] == "pre-migration" == backup.label and backup.trigger == "manual"
    assert printed["plan"] == {"id": plan.pk, "name": "Nightly"}
    assert printed["stored_bytes"] == backup.stored_bytes > 0 and printed["sha256"] == backup.sha256
    assert [(c["destination"]["name"], c["status"]) for c in printed["copies"]] == [("Local disk", "durable")]
    assert AuditEvent.objects.get(action="backup.queue").actor_label == "backup command"


def test_backup_wait_says_it_in_words_and_fails_with_the_backup(plan, tmp_path):
    text = run("backup", "--plan", "Nightly", "--wait")
    first = Backup.objects.get()
    assert f"Backing up plan Nightly as backup #{first.pk}…" in text
    assert f"Backup #{first.pk} of plan Nightly succeeded in " in text and "stored in 1 destination." in text

    (tmp_path / "shop.sqlite3").unlink()  # the next run cannot read its source
    with pytest.raises(CommandError, match=r"Backup #\d+ failed: .*shop.sqlite3"):
        run("backup", "--plan", "Nightly", "--wait")
    assert Backup.objects.exclude(pk=first.pk).get().status == Backup.FAILED


def test_backup_without_wait_queues_it_for_a_worker(plan, monkeypatch):
    monkeypatch.setattr(Conf, "SYNC", False)  # the task stays in the broker, as with a cluster that is busy

    text = run("backup", "--plan", str(plan.pk))

    backup = Backup.objects.get()
    assert backup.status == Backup.QUEUED
    assert text.strip() == (
        f"Queued backup #{backup.pk} of plan Nightly; a worker runs it "
        f"(follow it with: manage.py backups --source {plan.source.slug})."
    )
    assert list(OrmQ.objects.values_list("key", flat=True)) == ["strongroom"]
    with pytest.raises(CommandError, match="A backup of plan Nightly is already queued or running."):
        run("backup", "--plan", "Nightly")


def test_backup_refuses_a_bad_label_and_names_the_plans_there_are(plan):
    with pytest.raises(CommandError, match="may use letters, digits, - and _ only"):
        run("backup", "--plan", "Nightly", "--label", "pre migration; rm")
    with pytest.raises(CommandError, match="No plan named 'Weekly'. Plans: Nightly."):
        run("backup", "--plan", "Weekly")
    assert not Backup.objects.exists()


@pytest.fixture
def history(plan):
    """Backups in every state a list shows, made in the catalog directly (no run needed)."""
    now = timezone.now()
    other = services.save_source("test", Source(name="Billing", engine="sqlite", sqlite_path="/srv/b.sqlite3"))

    def made(hours_ago, source=plan.source, **fields):
        at = now - timedelta(hours=hours_ago)
        return Backup.objects.create(
            source=source,
            plan=plan if source == plan.source else None,
            format="sqlite",
            compression="zstd",
            started_at=at,
            finished_at=at,
            created_at=at,
            **fields,
        )

    return {
        "pruned": made(5, status=Backup.SUCCEEDED, stored_bytes=2048, pruned_at=now - timedelta(hours=1)),
        "held": made(
            4,
            status=Backup.SUCCEEDED,
            stored_bytes=4096,
            label="pre-migration",
            legal_hold=True,
            pinned=True,
            hold_reason="audit",
        ),
        "pinned": made(3, status=Backup.SUCCEEDED, stored_bytes=1536, pinned=True, hold_reason="keep"),
        "failed": made(2, status=Backup.FAILED, error="no such file"),
        "other": made(1, source=other, status=Backup.SUCCEEDED, stored_bytes=512),
    }


def test_backups_lists_each_backup_with_what_keeps_it(history, settings):
    settings.TIME_ZONE = "Europe/Berlin"
    lines = run("backups").splitlines()

    assert lines[0].split() == ["ID", "SOURCE", "PLAN", "STATUS", "STARTED", "SIZE", "LABEL", "KEPT", "PRUNED"]
    rows = {int(line.split()[0]): line for line in lines[1:]}
    assert list(rows) == [history[name].pk for name in ("other", "failed", "pinned", "held", "pruned")]  # newest first
    started = timezone.localtime(history["held"].started_at).strftime("%Y-%m-%d %H:%M")
    held = rows[history["held"].pk].split()
    assert held[1:4] == ["Shop", "Nightly", "succeeded"] and " ".join(held[4:6]) == started
    assert " ".join(held[6:]) == "4.0 KB pre-migration legal hold -"
    assert rows[history["pinned"].pk].split()[-4:] == ["KB", "-", "pinned", "-"]
    pruned_at = timezone.localtime(history["pruned"].pruned_at).strftime("%Y-%m-%d %H:%M")
    assert rows[history["pruned"].pk].endswith(pruned_at)
    assert rows[history["failed"].pk].split()[3] == "failed" and rows[history["other"].pk].split()[1:3] == [
        "Billing",
        "-",
    ]


def test_backups_filters_by_source_and_prints_json(history):
    for name in ("Billing", "billing", str(history["other"].source_id)):
        lines = run("backups", "--source", name).splitlines()
        assert [int(line.split()[0]) for line in lines[1:]] == [history["other"].pk]

    printed = json.loads(run("backups", "--source", "Shop", "--json"))
    assert [item["id"] for item in printed] == [history[n].pk for n in ("failed", "pinned", "held", "pruned")]
    by_id = {item["id"]: item for item in printed}
    assert by_id[history["held"].pk]["legal_hold"] is True and by_id[history["pinned"].pk]["pinned"] is True
    assert by_id[history["pruned"].pk]["pruned_at"] is not None and by_id[history["held"].pk]["pruned_at"] is None
    assert by_id[history["failed"].pk]["error"] == "no such file"

    with pytest.raises(CommandError, match="No source named 'Orders'. Sources: Billing, Shop."):
        run("backups", "--source", "Orders")
