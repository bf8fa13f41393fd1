"""manage.py export_config and import_config (catalog/config_as_code.py): a
realistic setup written without one secret, made again from the file on an
empty catalog, idempotent, reviewed by a dry run, refused whole on any
problem, and a backup taken with an imported plan."""

import io
import json
import os
import stat

import pytest
import yaml
from django.core.management import call_command
from django.core.management.base import CommandError
from django_q.models import Schedule

from catalog import backup_runs, services
from catalog.alerts import notify
from catalog.alerts.models import Channel
from catalog.models import AuditEvent, Backup, BackupPlan, Copy, Destination, RestoreServer, Source
from tests.factories import local_destination, make_plan, pg_source, recorded_backup
from tests.support import execute_sql, files_under

pytestmark = pytest.mark.django_db(transaction=True)

# The secret of each object, under the variable the export suggests for it.
SECRETS = {
    "STRONGROOM_SECRET_SOURCE_ORDERS_DB_PASSWORD": "orders-pw-Q7x9vLm2",
    "STRONGROOM_SECRET_SOURCE_SHOP_MARIADB_PASSWORD": "shop-pw-K2v8RtW4",
    "STRONGROOM_SECRET_DESTINATION_OFF_SITE_S3_SECRET_ACCESS_KEY": "s3-secret-Zr8Nq3Lp5Yt1",
    "STRONGROOM_SECRET_RESTORE_SERVER_SCRATCH_SERVER_PASSWORD": "scratch-pw-H6j3Fd0S",
    "STRONGROOM_SECRET_CHANNEL_OPS_WEBHOOK_WEBHOOK_SECRET": "hmac-secret-P4m7Xc2Vb9",
    "STRONGROOM_SECRET_CHANNEL_TEAM_CHAT_APPRISE_URL": "tgram://123456789:AAHbotTOKENs3cr3t/987654321",
}
ORDERS_PASSWORD = "STRONGROOM_SECRET_SOURCE_ORDERS_DB_PASSWORD"


@pytest.fixture
def setup(pg_database, s3_bucket, tmp_path):
    """Two sources with passwords, a local folder and an S3 bucket (moto: it
    takes any key), a restore server, three plans (one exporting chosen
    tables, which its form checks against the source) and three alert channels."""
    execute_sql(
        pg_database, "CREATE TABLE orders (id int PRIMARY KEY, total numeric); CREATE TABLE audit_2026 (id int)"
    )
    orders = pg_source(pg_database, name="Orders DB", password=SECRETS[ORDERS_PASSWORD])
    services.save_source(
        "test",
        Source(name="Shop (MariaDB)", engine="mariadb", host="127.0.0.1", port=3306, dbname="shop", user="backup"),
        secrets={"password": SECRETS["STRONGROOM_SECRET_SOURCE_SHOP_MARIADB_PASSWORD"]},
    )
    local = local_destination(tmp_path / "store", name="Local disk")
    s3 = Destination(
        name="Off-site S3",
        kind="s3",
        bucket=s3_bucket["bucket"],
        prefix="strongroom",
        endpoint_url=s3_bucket["endpoint_url"],
        region=s3_bucket["region"],
        access_key_id="AKIAEXAMPLE",
        offsite=True,
        quota_gb=500,
    )
    services.save_destination(
        "test",
        s3,
        secrets={"secret_access_key": SECRETS["STRONGROOM_SECRET_DESTINATION_OFF_SITE_S3_SECRET_ACCESS_KEY"]},
    )
    services.save_restore_server(
        "test",
        RestoreServer(name="Scratch server", host="127.0.0.1", port=5432, user="restorer"),
        secrets={"password": SECRETS["STRONGROOM_SECRET_RESTORE_SERVER_SCRATCH_SERVER_PASSWORD"]},
    )
    make_plan(
        orders,
        [local, s3],
        name="Orders nightly",
        schedule="30 2 * * *",
        compression_level=6,
        keep_daily=14,
        keep_weekly=8,
        restore_test_days=3,
        size_tolerance_percent=30,
    )
    make_plan(
        orders,
        [local],
        name="Orders hourly",
        schedule="5 * * * *",
        format="plain",
        retention_mode="last",
        keep_last=48,
        verify_new_backups=False,
        restore_test_days=0,
        enabled=False,
    )
    make_plan(
        orders,
        [s3],
        name="Orders export",
        schedule="0 5 * * 0",
        format="jsonl",
        export_tables=[{"schema": "public", "name": "orders", "where": "total > 100"}],
        export_sets=[{"label": "audit", "pattern": "public.audit_*"}],
    )
    notify.save_channel(
        "test",
        Channel(
            name="On-call mail",
            kind="email",
            email_to="oncall@example.org, dba@example.org",
            events=["source_health", "recovery"],
        ),
    )
    notify.save_channel(
        "test",
        Channel(name="Ops webhook", kind="webhook", url="http://127.0.0.1:9/strongroom", events=["backup_partial"]),
        secrets={"secret": SECRETS["STRONGROOM_SECRET_CHANNEL_OPS_WEBHOOK_WEBHOOK_SECRET"]},
    )
    notify.save_channel(
        "test",
        Channel(name="Team chat", kind="apprise", events=["source_health", "verification_failed"]),
        secrets={"url": SECRETS["STRONGROOM_SECRET_CHANNEL_TEAM_CHAT_APPRISE_URL"]},
    )


@pytest.fixture
def secrets_set(monkeypatch):
    for variable, value in SECRETS.items():
        monkeypatch.setenv(variable, value)


def export(*args):
    out, err = io.StringIO(), io.StringIO()
    call_command("export_config", *args, stdout=out, stderr=err)
    return out.getvalue()


def import_config(path, *args):
    out = io.StringIO()
    call_command("import_config", str(path), *args, stdout=out)
    return out.getvalue()


def write(path, config):
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


def wipe():
    """An empty catalog, as on a fresh host, through the pages' own services."""
    for plan in BackupPlan.objects.all():
        services.delete_plan("test", plan)
    for channel in Channel.objects.all():
        notify.delete_channel("test", channel)
    for server in RestoreServer.objects.all():
        services.delete_restore_server("test", server)
    for destination in Destination.objects.all():
        services.delete_destination("test", destination)
    for source in Source.objects.all():
        services.delete_source("test", source)


def entry(config, section, name):
    return next(item for item in config[section] if item["name"] == name)


def test_it_writes_the_setup_without_a_secret_and_makes_it_again_from_the_file(setup, secrets_set, tmp_path):
    text = export()

    assert not [value for value in SECRETS.values() if value in text]
    config = yaml.safe_load(text)
    assert [item["name"] for item in config["sources"]] == ["Orders DB", "Shop (MariaDB)"]
    orders = entry(config, "sources", "Orders DB")
    assert orders["password"] == {"env": ORDERS_PASSWORD} and "dsn" not in orders and "sqlite_path" not in orders
    assert "password: {env: STRONGROOM_SECRET_SOURCE_ORDERS_DB_PASSWORD}" in text
    assert entry(config, "destinations", "Local disk") == {
        "name": "Local disk",
        "kind": "local",
        "path": str(tmp_path / "store"),
        "host": "",
        "offsite": False,
        "quota_gb": None,
    }
    nightly = entry(config, "plans", "Orders nightly")
    assert nightly["source"] == "Orders DB" and nightly["destinations"] == ["Local disk", "Off-site S3"]
    assert (nightly["schedule"], nightly["keep_daily"], nightly["keep_weekly"]) == ("30 2 * * *", 14, 8)
    assert (nightly["compression_level"], nightly["restore_test_days"], nightly["size_tolerance_percent"]) == (6, 3, 30)
    hourly = entry(config, "plans", "Orders hourly")
    assert (hourly["retention_mode"], hourly["keep_last"], hourly["enabled"]) == ("last", 48, False)
    assert "keep_daily" not in hourly and "dump_jobs" not in hourly  # what its rule and format do not use
    assert "export_tables" not in hourly and entry(config, "plans", "Orders export")["export_tables"] == [
        {"schema": "public", "name": "orders", "where": "total > 100"}
    ]
    assert entry(config, "channels", "Team chat")["apprise_url"] == {
        "env": "STRONGROOM_SECRET_CHANNEL_TEAM_CHAT_APPRISE_URL"
    }
    assert not {"id", "pk", "created_at", "updated_at", "status", "last_good_at", "secret_token"} & {
        key
        for section in ("sources", "destinations", "restore_servers", "channels", "plans")
        for item in config[section]
        for key in item
    }

    path = tmp_path / "strongroom.yaml"
    path.write_text(text)
    wipe()
    assert not Source.objects.exists() and not Schedule.objects.filter(name__startswith="strongroom-plan-").exists()
    events = AuditEvent.objects.count()

    out = import_config(path)

    assert "Source “Orders DB”: created" in out and "Plan “Orders nightly”: created" in out
    assert "    password: (set)" in out and not [value for value in SECRETS.values() if value in out]
    assert export() == text
    assert Source.objects.get(name="Orders DB").secrets() == {"password": SECRETS[ORDERS_PASSWORD]}
    assert Destination.objects.get(name="Off-site S3").secrets() == {
        "secret_access_key": SECRETS["STRONGROOM_SECRET_DESTINATION_OFF_SITE_S3_SECRET_ACCESS_KEY"]
    }
    assert Channel.objects.get(name="Ops webhook").secrets() == {
        "secret": SECRETS["STRONGROOM_SECRET_CHANNEL_OPS_WEBHOOK_WEBHOOK_SECRET"]
    }
    nightly_plan = BackupPlan.objects.get(name="Orders nightly")
    assert Schedule.objects.get(name=nightly_plan.schedule_name()).cron == "30 2 * * *"
    hourly_plan = BackupPlan.objects.get(name="Orders hourly")
    assert not Schedule.objects.filter(name=hourly_plan.schedule_name()).exists()  # disabled: no schedule
    made = AuditEvent.objects.order_by("pk")[events:]
    assert sorted({event.action for event in made}) == [
        "channel.created",
        "destination.create",
        "plan.create",
        "restore_server.create",
        "source.create",
    ]
    assert {event.actor_label for event in made} == {"manage.py import_config"}
    trail = json.dumps([event.changes for event in made])
    assert not [value for value in SECRETS.values() if value in trail]
    assert entry_changes(made, "source.create", "Orders DB")["password"] == "changed"

    events = AuditEvent.objects.count()
    again = import_config(path)

    assert AuditEvent.objects.count() == events
    assert again.count(": unchanged") == 11 and again.endswith("Applied: 11 unchanged.\n")
    assert export() == text


def entry_changes(events, action, name):
    return next(event.changes for event in events if event.action == action and event.object_repr == name)


def test_a_dry_run_says_what_would_change_field_by_field_and_changes_nothing(setup, secrets_set, tmp_path, monkeypatch):
    config = yaml.safe_load(export())
    entry(config, "sources", "Orders DB")["grace_minutes"] = 45
    nightly = entry(config, "plans", "Orders nightly")
    nightly["schedule"], nightly["destinations"] = "0 4 * * *", ["Local disk"]
    config["channels"].append(
        {"name": "Pager", "kind": "email", "email_to": "pager@example.org", "events": ["stuck_job"]}
    )
    path = write(tmp_path / "changed.yaml", config)
    monkeypatch.setenv(ORDERS_PASSWORD, "a-new-password-R5t8")
    plan = BackupPlan.objects.get(name="Orders nightly")
    events = AuditEvent.objects.count()

    out = import_config(path, "--dry-run")

    assert "Source “Orders DB”: would change\n    grace_minutes: 120 → 45\n    password: (changed)\n" in out
    assert "Source “Shop (MariaDB)”: unchanged" in out
    assert "Plan “Orders nightly”: would change" in out
    assert '    schedule: "30 2 * * *" → "0 4 * * *"' in out
    assert '    destinations: ["Local disk", "Off-site S3"] → ["Local disk"]' in out
    assert "Channel “Pager”: would be created" in out and '    email_to: "pager@example.org"' in out
    assert "Dry run, nothing changed" in out and "a-new-password" not in out
    assert AuditEvent.objects.count() == events
    assert Source.objects.get(name="Orders DB").grace_minutes == 120
    assert Source.objects.get(name="Orders DB").secrets()["password"] == SECRETS[ORDERS_PASSWORD]
    assert Schedule.objects.get(name=plan.schedule_name()).cron == "30 2 * * *"
    assert plan.destinations.count() == 2 and not Channel.objects.filter(name="Pager").exists()

    out = import_config(path)

    assert "Source “Orders DB”: changed\n    grace_minutes: 120 → 45\n    password: (changed)\n" in out
    assert Source.objects.get(name="Orders DB").secrets()["password"] == "a-new-password-R5t8"
    assert Schedule.objects.get(name=plan.schedule_name()).cron == "0 4 * * *"
    assert [d.name for d in plan.destinations.all()] == ["Local disk"]
    change = AuditEvent.objects.get(action="source.update", actor_label="manage.py import_config")
    assert change.changes == {"grace_minutes": 45, "password": "changed"}


def test_a_missing_secret_fails_naming_the_object_and_field_and_applies_nothing(
    setup, secrets_set, tmp_path, monkeypatch
):
    path = tmp_path / "strongroom.yaml"
    path.write_text(export())
    wipe()
    events = AuditEvent.objects.count()
    monkeypatch.delenv(ORDERS_PASSWORD)

    with pytest.raises(CommandError) as refused:
        import_config(path)

    message = str(refused.value)
    assert message.startswith("Nothing was applied: 1 problem(s) in ")
    assert f"Source “Orders DB”, password: the environment variable {ORDERS_PASSWORD} is not set." in message
    assert not Source.objects.exists() and not Destination.objects.exists() and not Channel.objects.exists()
    assert AuditEvent.objects.count() == events


def test_a_secret_is_named_never_written_in_the_file(setup, secrets_set, tmp_path):
    config = yaml.safe_load(export())
    entry(config, "sources", "Orders DB")["password"] = "hunter2-in-the-file"
    entry(config, "sources", "Shop (MariaDB)")["password"] = {"file": str(tmp_path / "missing")}
    entry(config, "destinations", "Off-site S3")["secret_access_key"] = {"env": "EMPTY_ONE"}
    os.environ["EMPTY_ONE"] = ""
    try:
        with pytest.raises(CommandError) as refused:
            import_config(write(tmp_path / "bad.yaml", config))
    finally:
        del os.environ["EMPTY_ONE"]

    message = str(refused.value)
    assert "hunter2" not in message
    assert "Source “Orders DB”, password: give it as {env: VARIABLE} or {file: /path}" in message
    assert f"Source “Shop (MariaDB)”, password: the file {tmp_path / 'missing'} cannot be read: " in message
    assert "Destination “Off-site S3”, secret_access_key: the environment variable EMPTY_ONE is empty." in message


def test_an_invalid_cron_fails_with_the_forms_message_and_applies_nothing(setup, secrets_set, tmp_path):
    config = yaml.safe_load(export())
    entry(config, "sources", "Orders DB")["grace_minutes"] = 45
    entry(config, "plans", "Orders nightly")["schedule"] = "61 * * * *"
    entry(config, "plans", "Orders hourly")["schedule"] = "every hour"
    events = AuditEvent.objects.count()

    with pytest.raises(CommandError) as refused:
        import_config(write(tmp_path / "cron.yaml", config))

    message = str(refused.value)
    assert "Plan “Orders nightly”, schedule: “61 * * * *” is not a valid cron expression" in message
    assert (
        "Plan “Orders hourly”, schedule: Use five fields: minute hour day-of-month month day-of-week, e.g. 0 3 * * *"
        in message
    )
    assert Source.objects.get(name="Orders DB").grace_minutes == 120  # checked before it, undone with it
    assert AuditEvent.objects.count() == events


def test_the_forms_rules_and_the_files_shape_are_checked(setup, secrets_set, tmp_path):
    config = yaml.safe_load(export())
    entry(config, "sources", "Orders DB")["hots"] = "db.example.org"
    entry(config, "sources", "Shop (MariaDB)")["port"] = "3306"
    entry(config, "destinations", "Local disk")["path"] = "relative/folder"
    entry(config, "plans", "Orders nightly")["destinations"] = ["Local disk", "Tape"]
    entry(config, "channels", "On-call mail")["email_to"] = "not an address"
    config["plans"].append({"name": "Orders hourly", "source": "Orders DB"})

    with pytest.raises(CommandError) as refused:
        import_config(write(tmp_path / "wrong.yaml", config))

    message = str(refused.value)
    assert "Source “Orders DB”: unknown field “hots”" in message
    assert "Source “Shop (MariaDB)”, port: give a whole number." in message
    assert "Plan “Orders hourly” is in the file twice." in message
    # Reported once the shape is right: the forms' own rules.
    fixed = yaml.safe_load(export())
    entry(fixed, "destinations", "Local disk")["path"] = "relative/folder"
    entry(fixed, "plans", "Orders nightly")["destinations"] = ["Local disk", "Tape"]
    entry(fixed, "channels", "On-call mail")["email_to"] = "not an address"
    s3 = entry(fixed, "destinations", "Off-site S3")
    s3["kind"], s3["path"] = "local", str(tmp_path / "folder")  # and keeps its S3 key reference
    fixed["channels"].append(
        {"name": "New hook", "kind": "webhook", "url": "http://127.0.0.1:9/x", "events": ["stuck_job"]}
    )
    with pytest.raises(CommandError) as refused:
        import_config(write(tmp_path / "wrong.yaml", fixed))
    message = str(refused.value)
    assert "Destination “Local disk”, path: Give the absolute path of a directory." in message
    assert "Channel “On-call mail”, email_to: “not an address” is not an email address." in message
    assert (
        "Plan “Orders nightly”, destinations: there is no destination “Tape” here, "
        "nor one from the file that could be saved." in message
    )
    assert "Destination “Off-site S3”, secret_access_key: not a secret this kind of destination uses." in message
    assert (
        "Channel “New hook”, webhook_secret: give it as {env: VARIABLE} or {file: /path}: the receiver checks"
        in message
    )

    twice = tmp_path / "twice.yaml"
    twice.write_text("version: 1\nsources:\n  - name: A\n    host: one\n    host: two\n")
    with pytest.raises(CommandError, match="line 5, column 5: the key “host” is given twice"):
        import_config(twice)


def test_what_the_file_leaves_out_is_left_alone_unless_pruned(setup, secrets_set, tmp_path):
    config = yaml.safe_load(export())
    config["plans"] = [item for item in config["plans"] if item["name"] != "Orders hourly"]
    config["channels"] = [item for item in config["channels"] if item["name"] != "Team chat"]
    del config["restore_servers"]  # a section left out is not looked at
    path = write(tmp_path / "fewer.yaml", config)

    out = import_config(path)

    assert "Plan “Orders hourly”: not in the file: left alone" in out
    assert "Channel “Team chat”: not in the file: left alone" in out and "Scratch server" not in out
    assert BackupPlan.objects.filter(name="Orders hourly").exists()

    out = import_config(path, "--prune", "--dry-run")
    assert "Plan “Orders hourly”: not in the file: would be deleted" in out
    assert BackupPlan.objects.filter(name="Orders hourly").exists()

    out = import_config(path, "--prune")
    assert "Plan “Orders hourly”: not in the file: deleted" in out
    assert not BackupPlan.objects.filter(name="Orders hourly").exists()
    assert not Channel.objects.filter(name="Team chat").exists() and RestoreServer.objects.exists()
    assert AuditEvent.objects.filter(action="plan.delete", actor_label="manage.py import_config").count() == 1

    # As on its page, a source with backups stays; and nothing else is deleted either.
    recorded_backup(BackupPlan.objects.get(name="Orders nightly"))
    config["sources"] = [item for item in config["sources"] if item["name"] != "Orders DB"]
    config["plans"] = []
    with pytest.raises(CommandError) as refused:
        import_config(write(tmp_path / "no-orders.yaml", config), "--prune")
    assert "Source “Orders DB”: Orders DB has 1 backup(s) in the catalog." in str(refused.value)
    assert BackupPlan.objects.filter(name="Orders nightly").exists()


def test_json_and_a_private_output_file_and_secrets_in_files(setup, secrets_set, tmp_path):
    output = tmp_path / "strongroom.json"
    export("--format", "json", "--output", str(output))

    assert stat.S_IMODE(output.stat().st_mode) == 0o600
    assert json.loads(output.read_text()) == yaml.safe_load(export())
    assert import_config(output).count(": unchanged") == 11

    folder = tmp_path / "secrets"
    config = yaml.safe_load(export("--secret-files", str(folder)))
    reference = entry(config, "sources", "Orders DB")["password"]
    assert reference == {"file": str(folder / "source-orders-db-password")}
    folder.mkdir()
    for variable, value in SECRETS.items():
        (folder / variable.removeprefix("STRONGROOM_SECRET_").lower().replace("_", "-")).write_text(value + "\n")
    wipe()
    import_config(write(tmp_path / "files.yaml", config))
    assert Source.objects.get(name="Orders DB").secrets() == {"password": SECRETS[ORDERS_PASSWORD]}
    assert Channel.objects.get(name="Team chat").secrets() == {
        "url": SECRETS["STRONGROOM_SECRET_CHANNEL_TEAM_CHAT_APPRISE_URL"]
    }


EXAMPLE = """\
version: 1
sources:
  - name: Orders DB
    engine: postgresql
    host: {host}
    port: {port}
    dbname: {dbname}
    user: {user}
    password: {{env: STRONGROOM_SECRET_SOURCE_ORDERS_DB_PASSWORD}}
destinations:
  - name: Local disk
    kind: local
    path: {folder}
plans:
  - name: Orders nightly
    source: Orders DB
    schedule: 30 2 * * *
    destinations: [Local disk]
    keep_daily: 14
    verify_new_backups: false
"""


def test_a_backup_taken_with_an_imported_plan_works(pg_database, tmp_path, monkeypatch):
    execute_sql(
        pg_database, "CREATE TABLE orders (id int PRIMARY KEY); INSERT INTO orders SELECT generate_series(1, 250)"
    )
    monkeypatch.setenv(ORDERS_PASSWORD, "unused-by-a-trusting-server")
    folder = tmp_path / "store"
    path = tmp_path / "strongroom.yaml"
    path.write_text(EXAMPLE.format(folder=folder, **pg_database))

    import_config(path)

    plan = BackupPlan.objects.get(name="Orders nightly")
    assert (plan.format, plan.compression, plan.encrypt, plan.keep_daily) == ("custom", "zstd", True, 14)
    backup = backup_runs.start_backup("test", plan)
    backup.refresh_from_db()
    assert backup.status == Backup.SUCCEEDED, backup.error
    assert backup.table_counts["public.orders"] == 250
    copy = backup.copies.get()
    assert copy.status == Copy.DURABLE and copy.destination.name == "Local disk"
    assert any(str(p).endswith(copy.key.split("/")[-1]) for p in files_under(folder))


def test_every_kind_of_source_destination_and_channel_comes_back_the_same(tmp_path, monkeypatch):
    """The kinds the realistic setup above does not hold: each one's own fields
    and secrets (nothing here is contacted: an import tests no connection)."""
    services.save_source("test", Source(name="Shop file", engine="sqlite", sqlite_path="/srv/shop.sqlite3", port=None))
    services.save_source(
        "test", Source(name="By DSN", engine="postgresql"), secrets={"dsn": "postgresql://u:dsn-pw-T5r@db:5432/x"}
    )
    kinds = {
        "Azure": (
            Destination(kind="azure", account_name="acme", bucket="backups", prefix="sr/"),
            {"account_key": "azure-key-W3e", "sas_token": "sv=2024&sig=sas-Q1z"},
        ),
        "GCS": (Destination(kind="gcs", bucket="acme-backups"), {"service_account_json": '{"type": "sa-J8k"}'}),
        "SFTP": (
            Destination(kind="sftp", server="127.0.0.1", server_port=2222, username="backup", path="upload"),
            {"password": "sftp-pw-N4b", "private_key": "-----BEGIN KEY-----\nkey-M2c\n-----END KEY-----"},
        ),
    }
    for name, (destination, secrets) in kinds.items():
        destination.name = name
        services.save_destination("test", destination, secrets=secrets)
    notify.save_channel(
        "test", Channel(name="Slack", kind="slack", events=["stuck_job"]), secrets={"url": "http://127.0.0.1:9/s-V6n"}
    )
    notify.save_channel(
        "test", Channel(name="PagerDuty", kind="pagerduty", events=["source_health"]), secrets={"routing_key": "pd-X0p"}
    )
    secret_values = ["dsn-pw-T5r", "azure-key-W3e", "sas-Q1z", "sa-J8k", "sftp-pw-N4b", "key-M2c", "s-V6n", "pd-X0p"]
    text = export()
    assert not [value for value in secret_values if value in text]
    config = yaml.safe_load(text)
    assert entry(config, "sources", "Shop file") == {
        "name": "Shop file",
        "engine": "sqlite",
        "sqlite_path": "/srv/shop.sqlite3",
        "rpo_minutes": None,
        "rto_minutes": None,
        "grace_minutes": 120,
        "paused": False,
    }
    assert entry(config, "destinations", "SFTP")["private_key"] == {
        "env": "STRONGROOM_SECRET_DESTINATION_SFTP_PRIVATE_KEY"
    }
    assert "private_key_passphrase" not in entry(config, "destinations", "SFTP")  # none stored
    stored = {
        (section, obj.name): obj.secrets()
        for section, model in (("sources", Source), ("destinations", Destination), ("channels", Channel))
        for obj in model.objects.all()
    }
    for variable, (section, name, field) in {
        "STRONGROOM_SECRET_SOURCE_BY_DSN_DSN": ("sources", "By DSN", "dsn"),
        "STRONGROOM_SECRET_DESTINATION_AZURE_ACCOUNT_KEY": ("destinations", "Azure", "account_key"),
        "STRONGROOM_SECRET_DESTINATION_AZURE_SAS_TOKEN": ("destinations", "Azure", "sas_token"),
        "STRONGROOM_SECRET_DESTINATION_GCS_SERVICE_ACCOUNT_JSON": ("destinations", "GCS", "service_account_json"),
        "STRONGROOM_SECRET_DESTINATION_SFTP_PASSWORD": ("destinations", "SFTP", "password"),
        "STRONGROOM_SECRET_DESTINATION_SFTP_PRIVATE_KEY": ("destinations", "SFTP", "private_key"),
        "STRONGROOM_SECRET_CHANNEL_SLACK_SLACK_URL": ("channels", "Slack", "url"),
        "STRONGROOM_SECRET_CHANNEL_PAGERDUTY_ROUTING_KEY": ("channels", "PagerDuty", "routing_key"),
    }.items():
        monkeypatch.setenv(variable, stored[section, name][field])
    path = tmp_path / "kinds.yaml"
    path.write_text(text)
    wipe()

    import_config(path)

    assert export() == text
    assert stored == {
        (section, obj.name): obj.secrets()
        for section, model in (("sources", Source), ("destinations", Destination), ("channels", Channel))
        for obj in model.objects.all()
    }
    assert import_config(path).endswith("Applied: 7 unchanged.\n")


def test_an_output_file_that_cannot_be_written_is_said_in_words(db, tmp_path):
    with pytest.raises(CommandError, match="Cannot write .*/missing/strongroom.yaml: No such file or directory"):
        export("--output", str(tmp_path / "missing" / "strongroom.yaml"))
