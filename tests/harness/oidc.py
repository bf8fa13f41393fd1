"""An OpenID Connect identity provider for the single sign-on tests: panva's
oidc-provider from npm (pinned in tests/harness/node/package-lock.json, run
by tests/harness/node/oidc-server.mjs), on a free loopback port, started once
per session for the live server's callback URL.

Its people are in a JSON file it reads at every sign-in, so a test changes
someone's groups or password by rewriting it (`set_person`); each test starts
from PEOPLE. Its login page asks for a user name and a password, as a real
provider's does. Without Node.js or `npm ci --prefix tests/harness/node` the
tests that need it are skipped, saying why.
"""

import json
import secrets
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

import pytest
import requests
from django.contrib.auth.models import Group, Permission

from accounts import oidc
from catalog.engine.wal import stop_process
from catalog.roles import grant_roles
from tests.harness.pg import free_port

NODE_DIR = Path(__file__).resolve().parent / "node"
SERVER_SCRIPT = NODE_DIR / "oidc-server.mjs"
CLIENT_ID = "strongroom-tests"

# Who the provider knows: an administrator, an auditor and someone in neither group.
PEOPLE = {
    "ada": {"sub": "4f1c0a7e-ada", "email": "ada@example.org", "groups": ["backup-admins"]},
    "ben": {"sub": "9b2d61c3-ben", "email": "ben@example.org", "groups": ["backup-auditors", "staff"]},
    "cleo": {"sub": "c7e85f02-cleo", "email": "cleo@example.org", "groups": ["staff"]},
}
ADMINISTRATOR_GROUP = "backup-admins"
AUDITOR_GROUP = "backup-auditors"


def password_of(username):
    return f"provider password of {username}"


def missing_reason():
    """Why the provider cannot start here, or None."""
    if shutil.which("node") is None:
        return "the OIDC test provider needs Node.js (node) on the PATH"
    if not (NODE_DIR / "node_modules" / "oidc-provider").exists():
        return "oidc-provider is not installed: run `npm ci --prefix tests/harness/node`"
    return None


class IdentityProvider:
    """A running oidc-server.mjs: its issuer, its one client, its people."""

    def __init__(self, directory, redirect_uri):
        self.directory = Path(directory)
        self.people_file = self.directory / "people.json"
        self.client_id = CLIENT_ID
        self.client_secret = secrets.token_urlsafe(24)
        self.reset_people()
        port = free_port()
        self.issuer = f"http://127.0.0.1:{port}"
        self.log = self.directory / "oidc-server.log"
        with self.log.open("wb") as output:
            self.process = subprocess.Popen(
                [
                    "node",
                    str(SERVER_SCRIPT),
                    *("--port", str(port), "--client-id", self.client_id),
                    *("--redirect-uri", redirect_uri, "--accounts", str(self.people_file)),
                ],
                cwd=NODE_DIR,
                env={"PATH": "/usr/local/bin:/usr/bin:/bin", "OIDC_CLIENT_SECRET": self.client_secret},
                stdout=output,
                stderr=subprocess.STDOUT,
            )
        self.wait_until_ready()

    def wait_until_ready(self):
        deadline = time.monotonic() + 30
        while True:
            try:
                if requests.get(f"{self.issuer}/.well-known/openid-configuration", timeout=1).ok:
                    return
            except requests.RequestException:
                pass
            if time.monotonic() > deadline or self.process.poll() is not None:
                self.stop()
                raise RuntimeError(
                    f"the OIDC test provider did not start: {self.log.read_text(errors='replace')[-800:]}"
                )
            time.sleep(0.1)

    def stop(self):
        stop_process(self.process)

    def reset_people(self):
        self.people = {name: {**person, "password": password_of(name)} for name, person in PEOPLE.items()}
        self.write_people()

    def set_person(self, username, **fields):
        """Adds or changes someone at the provider; the next sign-in sees it."""
        self.people[username] = {**self.people.get(username, {"password": password_of(username)}), **fields}
        self.write_people()

    def write_people(self):
        users = [{"username": name, **person} for name, person in self.people.items()]
        self.people_file.write_text(json.dumps({"users": users}))

    def issued(self):
        """The authorization codes and access tokens the provider gave out so far."""
        return requests.get(f"{self.issuer}/_test/issued", timeout=5).json()


@pytest.fixture(scope="session")
def oidc_provider(live_server):
    if reason := missing_reason():
        pytest.skip(reason)
    directory = tempfile.mkdtemp(prefix="strongroom-oidc-")
    provider = IdentityProvider(directory, f"{live_server.url}/login/sso/callback/")
    yield provider
    provider.stop()
    shutil.rmtree(directory, ignore_errors=True)


@pytest.fixture
def single_sign_on(settings, oidc_provider):
    """Strongroom set up to sign in at the session's provider, roles mapped
    from its groups, nobody created just in time; the provider's people as
    in PEOPLE. A test changes any of it through `settings` and the provider."""
    # A transactional test flushes the role groups the data migration made.
    grant_roles(Group, Permission)
    oidc_provider.reset_people()
    settings.OIDC_ISSUER = oidc_provider.issuer
    settings.OIDC_RP_CLIENT_ID = oidc_provider.client_id
    settings.OIDC_RP_CLIENT_SECRET = oidc_provider.client_secret
    settings.OIDC_PROVIDER_NAME = "Test IdP"
    settings.OIDC_RP_SCOPES = "openid email profile groups"
    settings.OIDC_ADMINISTRATOR_GROUPS = [ADMINISTRATOR_GROUP]
    settings.OIDC_AUDITOR_GROUPS = [AUDITOR_GROUP]
    settings.OIDC_CREATE_USERS = False
    oidc.forget_provider()
    yield oidc_provider
    oidc.forget_provider()
