"""Catalog objects for tests, built through the same services the UI uses
(so each one is validated and audited as a real one would be)."""

from catalog import services
from catalog.models import BackupPlan, Destination, Source


def pg_source(conninfo, name="Inventory DB", password=None):
    """A PostgreSQL source for the database `conninfo` names."""
    source = Source(
        name=name,
        engine="postgresql",
        host=conninfo["host"],
        port=conninfo["port"],
        dbname=conninfo["dbname"],
        user=conninfo["user"],
    )
    return services.save_source("test", source, secrets={"password": password or conninfo.get("password")})


def local_destination(path, name="Local disk"):
    return services.save_destination("test", Destination(name=name, kind="local", path=str(path)))


def s3_destination(bucket, name="Off-site S3"):
    """An off-site S3 destination for a bucket of the test S3 server."""
    destination = Destination(
        name=name,
        kind="s3",
        bucket=bucket["bucket"],
        prefix="strongroom",
        endpoint_url=bucket["endpoint_url"],
        region=bucket["region"],
        access_key_id=bucket["access_key_id"],
        offsite=True,
    )
    return services.save_destination("test", destination, secrets={"secret_access_key": bucket["secret_access_key"]})


def make_plan(source, destinations, name="Nightly", **fields):
    plan = BackupPlan(name=name, source=source, **fields)
    return services.save_plan("test", plan, destinations=destinations)
