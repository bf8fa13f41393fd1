"""What the pages and the API say of a directory-format backup (issue 22):
pg_dump's directory stored as one tar, so the download is that tar, which
must be unpacked before pg_restore -j reads it. The backups here are
recorded rows; tests/catalog/test_directory_backups.py takes real ones."""

import html
import re

import pytest
from django.urls import reverse

from catalog import downloads, services
from catalog.models import Source
from restore.wizard import SESSION_KEY
from tests.catalog.api.helpers import bearer, make_token
from tests.factories import recorded_backup, recorded_plan

pytestmark = pytest.mark.django_db


@pytest.fixture
def backup():
    source = services.save_source(
        "test", Source(name="Shop", engine="postgresql", host="127.0.0.1", dbname="shop", user="postgres")
    )
    plan = recorded_plan(source, format="directory", compression="zstd", dump_jobs=4)
    return recorded_backup(plan)


def unpack_and_restore(backup):
    return f"mkdir dump && tar -xf {downloads.plain_name(backup)} -C dump && pg_restore -j 4 -d newdb dump"


def test_the_backup_page_says_the_dump_is_one_tar_of_pg_dumps_directory(admin_client, backup):
    page = admin_client.get(backup.get_absolute_url()).content.decode()
    shown = re.search(r"<dt>Format</dt>\s*<dd>(.*?)</dd>", page, re.S).group(1)
    assert " ".join(shown.split()) == (
        "PostgreSQL directory with parallel jobs (pg_dump -Fd -j), stored as one tar archive of pg_dump's files · zstd"
    )
    title = re.search(r'<button type="submit"\s+title="([^"]*)">Download dump</button>', page, re.S).group(1)
    assert " ".join(html.unescape(title).split()) == (
        f"pg_dump's directory as one tar, decrypted and decompressed: {unpack_and_restore(backup)}. "
        "Recorded in the audit trail."
    )


def test_a_custom_backups_download_is_still_for_pg_restore_or_psql(admin_client, backup):
    custom = recorded_backup(recorded_plan(backup.source, name="Custom", format="custom"))
    page = admin_client.get(custom.get_absolute_url()).content.decode()
    assert "The dump as pg_restore or psql reads it" in " ".join(page.split())
    assert "tar -xf" not in page


def test_the_wizards_download_says_how_to_unpack_a_directory_backup(admin_client, backup):
    session = admin_client.session
    session[SESSION_KEY] = {"source": backup.source.pk, "backup": backup.pk, "target": "download"}
    session.save()
    page = admin_client.get(reverse("restore_step", args=["review"])).content.decode()
    said = " ".join(html.unescape(page).split())
    assert f"Download backup #{backup.pk} as one tar of pg_dump's directory, decrypted and decompressed" in said
    assert unpack_and_restore(backup) in said


def test_the_api_names_the_format_and_documents_it(client, backup):
    _, raw = make_token()
    listed = client.get("/api/v1/backups", headers=bearer(raw)).json()
    assert [b["format"] for b in listed["results"]] == ["directory"]
    document = client.get("/api/v1/openapi.json").json()
    described = document["components"]["schemas"]["Backup"]["properties"]["format"]["description"]
    assert "directory: PostgreSQL directory with parallel jobs (pg_dump -Fd -j)" in described
