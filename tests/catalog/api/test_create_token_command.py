"""`manage.py create_token`: a token for automation, belonging to a person,
printed once and alone on standard output."""

import io

import pytest
from django.core.management import CommandError, call_command

from catalog.api.models import ApiToken
from catalog.models import AuditEvent
from tests.catalog.api.helpers import bearer

pytestmark = pytest.mark.django_db


def create(*args):
    out, err = io.StringIO(), io.StringIO()
    call_command("create_token", *args, stdout=out, stderr=err)
    return out.getvalue().strip(), err.getvalue()


def test_it_prints_a_working_token_that_belongs_to_its_owner(client, admin_user):
    raw, said = create("--owner", "alice", "--name", "provisioning", "--scope", "backup", "--scope", "read")
    assert raw.startswith("sr_") and "\n" not in raw and raw not in said
    token = ApiToken.objects.get()
    assert token.created_by == admin_user and token.scopes == ["backup", "read"]
    assert client.get("/api/v1/status", headers=bearer(raw)).status_code == 200
    event = AuditEvent.objects.get(action="token.create")
    assert event.actor_label == "manage.py create_token" and event.changes["owner"] == "alice"
    assert raw not in str(event.changes)


def test_it_refuses_an_unknown_owner_and_write_scopes_for_an_auditor(auditor_user):
    with pytest.raises(CommandError, match="No user is called 'nobody'"):
        create("--owner", "nobody", "--name", "x")
    with pytest.raises(CommandError, match="not an administrator"):
        create("--owner", "audrey", "--name", "x", "--scope", "backup")
    raw, _ = create("--owner", "audrey", "--name", "dashboards")
    assert ApiToken.objects.get().scopes == ["read"]


def test_it_refuses_a_deactivated_owner(admin_user):
    admin_user.is_active = False
    admin_user.save()
    with pytest.raises(CommandError, match="deactivated"):
        create("--owner", "alice", "--name", "x")
    assert not ApiToken.objects.exists()
