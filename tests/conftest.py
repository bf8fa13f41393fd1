import os
import uuid

import pytest
from django.contrib.auth.models import Group, Permission, User

from catalog.roles import grant_roles
from tests.harness import pg, s3

# Each real server besides PostgreSQL and S3 keeps its fixtures beside the code
# that starts it: MariaDB, Azurite (Azure Blob), OpenSSH (SFTP), the GCS emulator
# and an OpenID Connect identity provider (single sign-on).
pytest_plugins = [
    "tests.harness.mariadb",
    "tests.harness.azurite",
    "tests.harness.sftp",
    "tests.harness.gcs",
    "tests.harness.oidc",
]


@pytest.fixture(scope="session")
def pg_server():
    return pg.ensure_server()


@pytest.fixture(scope="session")
def password_server():
    """A throwaway cluster that insists on a password (pg.TEST_PASSWORD)."""
    server, stop = pg.throwaway_cluster(auth="scram-sha-256", password=pg.TEST_PASSWORD)
    yield server
    stop()


@pytest.fixture
def pg_database(pg_server):
    """A fresh, empty PostgreSQL database; dropped afterwards."""
    name = f"sr_test_{uuid.uuid4().hex[:10]}"
    yield pg.create_database(name)
    pg.drop_database(name)


@pytest.fixture(scope="session")
def s3_server():
    server, endpoint_url = s3.start_server()
    yield endpoint_url
    server.stop()


@pytest.fixture
def s3_bucket(s3_server):
    bucket = f"sr-test-{uuid.uuid4().hex[:10]}"
    s3.client(s3_server).create_bucket(Bucket=bucket)
    return {"endpoint_url": s3_server, "bucket": bucket, **s3.CREDENTIALS}


def make_user(username, group_name):
    # A transactional test flushes the groups the data migration made.
    grant_roles(Group, Permission)
    user = User.objects.create_user(username, f"{username}@example.org", "correct horse battery")
    user.groups.add(Group.objects.get(name=group_name))
    return user


@pytest.fixture
def admin_user(db):
    return make_user("alice", "Administrators")


@pytest.fixture
def auditor_user(db):
    return make_user("audrey", "Auditors")


@pytest.fixture
def admin_client(client, admin_user):
    client.force_login(admin_user)
    return client


@pytest.fixture
def auditor_client(db, auditor_user):
    from django.test import Client

    other = Client()
    other.force_login(auditor_user)
    return other


CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]


@pytest.fixture(scope="session")
def browser():
    from playwright.sync_api import sync_playwright

    # Playwright's sync API keeps an event loop in this thread; the ORM calls
    # a test makes between page actions are still plain synchronous code.
    os.environ["DJANGO_ALLOW_ASYNC_UNSAFE"] = "true"

    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path="/usr/bin/chromium", args=CHROMIUM_ARGS)
        yield chromium
        chromium.close()


@pytest.fixture
def page(browser):
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    yield context.new_page()
    context.close()
