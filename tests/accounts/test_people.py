"""The users and roles page: administrators add people, change roles,
deactivate and reset; auditors only look; the last administrator stays."""

import io
import re

import pytest
from django.contrib.auth.models import Group, Permission, User
from django.test import Client

from accounts import people
from catalog.api import tokens
from catalog.errors import Refused
from catalog.models import AuditEvent
from catalog.roles import grant_roles, role_of
from tests.conftest import make_user

pytestmark = pytest.mark.django_db

PASSWORD = "a long and unusual passphrase"


def actions():
    return list(AuditEvent.objects.order_by("id").values_list("action", flat=True))


def link_in(html):
    return re.search(r'id="set-password-link">https?://[^/]+(/login/reset/[^<]+)<', html).group(1)


def choose_password(path, password=PASSWORD):
    """Opens a set-password link as its recipient would, signed out, and chooses a password."""
    stranger = Client()
    form_page = stranger.get(path, follow=True)
    assert "Choose your password" in form_page.content.decode()
    done = stranger.post(form_page.redirect_chain[-1][0], {"new_password1": password, "new_password2": password})
    return stranger, done


def test_an_invited_auditor_chooses_a_password_from_the_link_and_signs_in(admin_client, mailoutbox):
    answer = admin_client.post(
        "/people/new/", {"username": "ivan", "email": "ivan@example.org", "role": "auditor", "sign_in": "invite"}
    )
    assert answer.status_code == 200
    assert answer["Cache-Control"].startswith("max-age=0") or "no-cache" in answer["Cache-Control"]
    path = link_in(answer.content.decode())
    ivan = User.objects.get(username="ivan")
    assert role_of(ivan) == "auditor" and not ivan.has_usable_password()
    # The same link went by e-mail, and nothing else of the account did.
    assert len(mailoutbox) == 1 and mailoutbox[0].to == ["ivan@example.org"] and path in mailoutbox[0].body

    stranger, done = choose_password(path)
    assert done.status_code == 302 and done["Location"] == "/login/"
    assert stranger.login(username="ivan", password=PASSWORD)
    assert stranger.get("/people/").status_code == 200
    # A link works once.
    assert "no longer works" in Client().get(path, follow=True).content.decode()
    assert actions()[-3:] == ["person.create", "person.invite", "person.password_set"]
    assert PASSWORD not in str(list(AuditEvent.objects.values_list("changes", flat=True)))


def test_an_invitation_without_an_email_address_says_it_was_not_sent(admin_client, mailoutbox):
    answer = admin_client.post("/people/new/", {"username": "nomail", "email": "", "role": "none", "sign_in": "invite"})
    assert "not e-mailed" in answer.content.decode() and "no e-mail address" in answer.content.decode()
    assert not mailoutbox
    assert role_of(User.objects.get(username="nomail")) is None


def test_a_person_added_with_a_password_signs_in_with_it(admin_client):
    answer = admin_client.post(
        "/people/new/",
        {"username": "pam", "email": "", "role": "administrator", "sign_in": "password", "password": PASSWORD},
    )
    assert answer.status_code == 302
    assert Client().login(username="pam", password=PASSWORD)
    assert role_of(User.objects.get(username="pam")) == "administrator"


@pytest.mark.parametrize(
    "fields, error",
    [
        ({"username": "alice"}, "already a user named alice"),
        ({"username": "ALICE"}, "already a user named ALICE"),
        ({"username": "bad name"}, "Use only letters"),
        ({"sign_in": "password", "password": ""}, "Type the password"),
        ({"sign_in": "password", "password": "password"}, "too common"),
        ({"email": "not-an-address"}, "valid email"),
    ],
)
def test_the_add_form_says_what_is_wrong(admin_client, fields, error):
    data = {"username": "newbie", "email": "", "role": "auditor", "sign_in": "invite", **fields}
    answer = admin_client.post("/people/new/", data)
    assert answer.status_code == 200 and error in answer.content.decode()
    assert not User.objects.filter(username="newbie").exists()


def test_an_administrator_changes_a_role_and_it_is_audited(admin_client):
    bob = make_user("bob", "Auditors")
    admin_client.post(f"/people/{bob.pk}/change/", {"role": "administrator", "email": "bob@example.org"})
    bob.refresh_from_db()
    assert role_of(User.objects.get(pk=bob.pk)) == "administrator" and bob.email == "bob@example.org"
    event = AuditEvent.objects.filter(action="person.role").get()
    assert event.changes == {"role": ["auditor", "administrator"]} and event.actor_label == "alice"


def test_the_last_administrator_can_be_neither_demoted_nor_deactivated(admin_client, admin_user):
    answer = admin_client.post(f"/people/{admin_user.pk}/change/", {"role": "auditor", "email": ""}, follow=True)
    assert "last active administrator" in answer.content.decode()
    assert role_of(User.objects.get(pk=admin_user.pk)) == "administrator"
    with pytest.raises(Refused, match="last active administrator"):
        people.deactivate("cli", admin_user)
    # With a second administrator, the first may go; a deactivated one does not count.
    second = make_user("second", "Administrators")
    people.deactivate("cli", second)
    with pytest.raises(Refused, match="last active administrator"):
        people.set_role("cli", admin_user, people.NO_ROLE)
    people.reactivate("cli", second)
    assert people.set_role("cli", admin_user, people.AUDITOR)
    assert role_of(User.objects.get(pk=admin_user.pk)) == "auditor"


def test_a_superuser_is_an_administrator_and_demoting_one_drops_superuser(admin_user):
    root = User.objects.create_superuser("root", "", PASSWORD)
    assert set(people.active_administrators()) == {admin_user, root}
    people.set_role("cli", root, people.AUDITOR)
    root = User.objects.get(pk=root.pk)
    assert not root.is_superuser and role_of(root) == "auditor"


def test_a_deactivated_person_is_signed_out_and_their_tokens_refused(admin_client):
    bob = make_user("bob", "Administrators")
    _, raw = tokens.create_token(bob, "bob's script", ["read"])
    client = Client()
    client.force_login(bob)
    assert client.get("/").status_code == 200
    assert client.get("/api/v1/status", HTTP_AUTHORIZATION=f"Bearer {raw}").status_code == 200

    admin_client.post(f"/people/{bob.pk}/deactivate/")
    assert client.get("/")["Location"].startswith("/login/")
    refused = client.get("/api/v1/status", HTTP_AUTHORIZATION=f"Bearer {raw}")
    assert refused.status_code == 401 and "deactivated" in refused.json()["error"]
    assert not Client().login(username="bob", password="correct horse battery")

    # Their role stays theirs while deactivated, and comes back with them.
    assert "Administrator" in admin_client.get(f"/people/{bob.pk}/").content.decode()
    admin_client.post(f"/people/{bob.pk}/reactivate/")
    assert Client().get("/api/v1/status", HTTP_AUTHORIZATION=f"Bearer {raw}").status_code == 200
    assert [a for a in actions() if a.startswith("person.")] == ["person.deactivate", "person.reactivate"]


def test_nobody_deactivates_themselves(admin_client, admin_user):
    make_user("second", "Administrators")
    answer = admin_client.post(f"/people/{admin_user.pk}/deactivate/", follow=True)
    assert "cannot deactivate yourself" in answer.content.decode()
    assert User.objects.get(pk=admin_user.pk).is_active


def test_a_password_reset_link_lets_them_choose_a_new_one_and_the_old_one_works_until_then(admin_client, mailoutbox):
    bob = make_user("bob", "Auditors")
    answer = admin_client.post(f"/people/{bob.pk}/password-reset/")
    path = link_in(answer.content.decode())
    assert mailoutbox[0].to == ["bob@example.org"] and "new password" in mailoutbox[0].body
    assert Client().login(username="bob", password="correct horse battery")
    # Signing in with the current password spends the link (Django's token covers last_login).
    assert "no longer works" in Client().get(path, follow=True).content.decode()
    path = link_in(admin_client.post(f"/people/{bob.pk}/password-reset/").content.decode())
    choose_password(path)
    assert Client().login(username="bob", password=PASSWORD)
    assert not Client().login(username="bob", password="correct horse battery")


def test_a_deactivated_person_gets_no_reset_link(admin_client):
    bob = make_user("bob", "Auditors")
    people.deactivate("cli", bob)
    answer = admin_client.post(f"/people/{bob.pk}/password-reset/", follow=True)
    assert "reactivate them before sending a reset" in answer.content.decode()
    assert not AuditEvent.objects.filter(action="person.password_reset").exists()


def test_auditors_see_the_list_and_change_nothing(auditor_client, admin_user):
    listing = auditor_client.get("/people/").content.decode()
    assert "alice" in listing and "audrey" in listing and "Add a person" not in listing
    detail = auditor_client.get(f"/people/{admin_user.pk}/").content.decode()
    assert "Administrator" in detail and "Deactivate" not in detail and "Save" not in detail
    assert auditor_client.post(f"/people/{admin_user.pk}/change/", {"role": "none", "email": ""}).status_code == 403
    assert auditor_client.get("/people/new/").status_code == 403
    assert role_of(User.objects.get(pk=admin_user.pk)) == "administrator"


def test_someone_without_a_role_sees_no_people(client, db):
    grant_roles(Group, Permission)
    nobody = User.objects.create_user("nobody", "", PASSWORD)
    client.force_login(nobody)
    assert client.get("/people/").status_code == 403


def test_the_list_shows_roles_sign_in_methods_and_live_tokens(admin_client, admin_user):
    tokens.create_token(admin_user, "live", ["read"])
    revoked, _ = tokens.create_token(admin_user, "gone", ["read"])
    tokens.revoke_token(admin_user, revoked)
    people.create_person("cli", "invited", "", people.AUDITOR)
    html = admin_client.get("/people/").content.decode()
    row = html[html.index("alice") :]
    assert "Administrator" in row and "password" in row and "1 active" in row
    invited = html[html.index(">invited<") :]
    assert "nothing yet: invited" in invited


def test_the_people_pages_show_two_factor_and_an_administrator_resets_it(admin_client, admin_user):
    from django_otp.plugins.otp_totp.models import TOTPDevice

    bob = make_user("bob", "Auditors")
    TOTPDevice.objects.create(user=bob, name="Authenticator app", confirmed=True)
    assert "+ two-factor" in admin_client.get("/people/").content.decode()
    page = admin_client.get(f"/people/{bob.pk}/").content.decode()
    assert (
        "Reset two-factor</button>" in page
        and "Require two-factor for administrators" in admin_client.get("/people/").content.decode()
    )

    answer = admin_client.post(f"/people/{bob.pk}/two-factor/reset/", follow=True)
    assert "is reset" in answer.content.decode() and answer.redirect_chain[-1][0] == f"/people/{bob.pk}/"
    assert not TOTPDevice.objects.filter(user=bob).exists()
    assert "Reset two-factor</button>" not in answer.content.decode()


def test_a_lost_second_factor_is_reset_from_the_shell(admin_user):
    from django.core.management import CommandError, call_command
    from django_otp.plugins.otp_totp.models import TOTPDevice

    TOTPDevice.objects.create(user=admin_user, name="Authenticator app", confirmed=True)
    call_command("reset_two_factor", "alice", stdout=io.StringIO())
    assert not TOTPDevice.objects.filter(user=admin_user).exists()
    assert AuditEvent.objects.filter(action="two_factor.reset", actor_label="manage.py reset_two_factor").exists()
    with pytest.raises(CommandError, match="no two-factor to reset"):
        call_command("reset_two_factor", "alice")


def test_a_person_whose_role_comes_from_the_providers_groups_is_said_so(admin_client, settings):
    from accounts.models import SingleSignOnIdentity

    bob = make_user("bob", "Auditors")
    SingleSignOnIdentity.objects.create(user=bob, issuer="https://idp.example.org", subject="b-123")
    settings.OIDC_PROVIDER_NAME = "Example SSO"
    assert "whose groups set their" not in admin_client.get(f"/people/{bob.pk}/").content.decode()
    settings.OIDC_AUDITOR_GROUPS = ["auditors"]
    page = admin_client.get(f"/people/{bob.pk}/").content.decode()
    assert "signs in through Example SSO, whose groups set their" in page
    assert "b-123 at https://idp.example.org" in page and "single sign-on" in page


def test_the_django_admin_shows_people_read_only_and_no_groups(client, admin_user):
    root = User.objects.create_superuser("root", "", PASSWORD)
    client.force_login(root)
    page = client.get(f"/admin/auth/user/{admin_user.pk}/change/")
    assert page.status_code == 200 and b'name="is_superuser"' not in page.content
    assert client.post(f"/admin/auth/user/{admin_user.pk}/change/", {"is_superuser": "on"}).status_code == 403
    assert client.get("/admin/auth/user/add/").status_code == 403
    assert client.get(f"/admin/auth/user/{admin_user.pk}/password/").status_code == 403
    assert client.get("/admin/auth/group/").status_code == 404
    assert not User.objects.get(pk=admin_user.pk).is_superuser
