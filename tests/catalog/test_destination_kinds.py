"""What every destination kind shares: its own secrets only, where it says it is."""

import pytest

from catalog import services
from catalog.models import Destination

pytestmark = pytest.mark.django_db


def test_a_destination_switched_to_another_kind_keeps_only_that_kinds_secrets():
    destination = services.save_destination(
        "test",
        Destination(name="Offsite", kind="s3", bucket="b"),
        secrets={"secret_access_key": "s3-secret"},
    )
    destination.kind, destination.account_name = "azure", "acct"
    services.save_destination("test", destination, changed_fields=["kind"], secrets={"account_key": "az-key"})

    destination.refresh_from_db()
    assert destination.secrets() == {"account_key": "az-key"}


@pytest.mark.parametrize(
    ("fields", "location", "provider"),
    [
        ({"kind": "local", "path": "/srv/backups"}, "/srv/backups", "local disks"),
        ({"kind": "s3", "bucket": "b", "prefix": "sr/"}, "s3://b/sr", "AWS S3"),
        (
            {"kind": "s3", "bucket": "b", "endpoint_url": "https://MinIO.example.org:9000"},
            "s3://b (https://MinIO.example.org:9000)",
            "S3-compatible storage at minio.example.org",
        ),
        ({"kind": "azure", "bucket": "c", "account_name": "acct"}, "azure://acct/c", "Azure Blob Storage"),
        ({"kind": "gcs", "bucket": "b", "prefix": "x"}, "gs://b/x", "Google Cloud Storage"),
        (
            {"kind": "sftp", "server": "Vault.example.org", "server_port": 2222, "username": "bk", "path": "/b"},
            "sftp://bk@Vault.example.org:2222/b",
            "SFTP server vault.example.org",
        ),
    ],
)
def test_each_kind_says_where_its_copies_are_and_who_keeps_them(fields, location, provider):
    destination = Destination(name="d", **fields)
    assert destination.location_display() == location
    assert destination.provider() == provider
