"""Single sign-on with OpenID Connect, end to end in Chromium against a real
identity provider (tests/harness/oidc.py): the button on the sign-in page,
the provider's own login page, and back signed in with the role its groups
give; just-in-time creation on and off; deactivated people, replayed and
tampered answers refused; passwords kept for the break-glass users; no
secret anywhere it must not be."""

import json
import logging
import os
import re
from urllib.parse import parse_qsl, urlencode, urlsplit

import pytest
from django.contrib.auth.models import Group, Permission, User

from accounts import people
from accounts.models import SingleSignOnIdentity
from catalog.models import AuditEvent
from catalog.roles import grant_roles, role_of
from tests.harness.oidc import PEOPLE, password_of
from tests.harness.pg import free_port

pytestmark = pytest.mark.django_db(transaction=True)

SHOTS = os.environ.get("STRONGROOM_SCREENSHOTS")  # a directory, to look at the pages by hand
NOT_SET_UP = "Your account at Test IdP is not set up in Strongroom; ask an administrator."
NOT_COMPLETED = "could not be completed"
BUTTON = "Sign in with Test IdP"
PASSWORDS_KEPT = "Passwords are kept for break-glass accounts here: use “Sign in with Test IdP” instead."
# A JSON Web Token: an ID token, or an access token in that format.
JWT = re.compile(r"eyJ[\w-]+\.eyJ[\w-]+\.[\w-]+")


def known_person(provider, username, role=people.NO_ROLE):
    """A Strongroom person linked to `username` at the provider."""
    grant_roles(Group, Permission)
    user = people.create_person("test", username, PEOPLE[username]["email"], role)
    SingleSignOnIdentity.objects.create(user=user, issuer=provider.issuer, subject=PEOPLE[username]["sub"])
    return user


def local_administrator(username="root", password="correct horse battery"):
    grant_roles(Group, Permission)
    return people.create_person("test", username, f"{username}@example.org", people.ADMINISTRATOR, password)


def at_provider(page, username, password=None):
    """Types the credentials on the provider's own login page."""
    page.wait_for_selector("#provider-username")
    page.fill("#provider-username", username)
    page.fill("#provider-password", password or password_of(username))
    page.click("#provider-sign-in")


def sign_in_with_provider(page, live_server, username, start="/login/"):
    page.goto(f"{live_server.url}{start}")
    page.click(f"text={BUTTON}")
    at_provider(page, username)


def refreshed(user):
    return User.objects.get(pk=user.pk)


def events(action):
    return list(AuditEvent.objects.filter(action=action).order_by("id"))


# --- signing in ------------------------------------------------------------------------


def test_it_signs_an_administrator_in_through_the_providers_login_page(live_server, page, single_sign_on):
    ada = known_person(single_sign_on, "ada")
    page.goto(f"{live_server.url}/sources/")
    page.wait_for_url(f"{live_server.url}/login/?next=/sources/")
    page.click(f"text={BUTTON}")
    page.wait_for_url(f"{single_sign_on.issuer}/interaction/*")
    at_provider(page, "ada")

    page.wait_for_url(f"{live_server.url}/sources/")  # back where they were going
    assert "ada" in page.locator("header").inner_text()
    ada = refreshed(ada)
    assert role_of(ada) == people.ADMINISTRATOR  # from the provider's backup-admins group
    assert ada.last_login is not None
    identity = ada.sso_identities.get()
    assert identity.issuer == single_sign_on.issuer and identity.last_sign_in_at is not None
    (sign_in,) = events("auth.sign_in")
    assert sign_in.actor_label == "ada"
    assert sign_in.changes == {"method": "sso", "issuer": single_sign_on.issuer}
    (role,) = events("person.role")
    assert role.actor_label == f"sso: {urlsplit(single_sign_on.issuer).netloc}"
    assert role.changes == {"role": ["none", "administrator"]}
    # The session says how it was signed in, for the two-factor step (the provider's own factors apply).
    session = page.context.cookies(live_server.url)
    assert any(cookie["name"] == "sessionid" for cookie in session)
    from django.contrib.sessions.models import Session

    (stored,) = [s.get_decoded() for s in Session.objects.all() if s.get_decoded().get("_auth_user_id")]
    assert stored["accounts.signed_in_with"] == "sso"
    assert not {"oidc_access_token", "oidc_id_token"} & set(stored)


def test_the_role_follows_the_providers_groups_at_every_sign_in(live_server, browser, single_sign_on):
    local_administrator()  # so that ada may be demoted
    ada = known_person(single_sign_on, "ada", people.ADMINISTRATOR)

    single_sign_on.set_person("ada", groups=["backup-auditors"])
    with fresh_page(browser) as page:
        sign_in_with_provider(page, live_server, "ada")
        page.wait_for_url(f"{live_server.url}/")
    assert role_of(refreshed(ada)) == people.AUDITOR
    assert [e.changes for e in events("person.role")] == [{"role": ["administrator", "auditor"]}]

    with fresh_page(browser) as page:  # unchanged groups: nothing to record
        sign_in_with_provider(page, live_server, "ada")
        page.wait_for_url(f"{live_server.url}/")
    assert len(events("person.role")) == 1

    single_sign_on.set_person("ada", groups=["staff"])
    with fresh_page(browser) as page:
        sign_in_with_provider(page, live_server, "ada")
        page.wait_for_url(f"{live_server.url}/")
    assert role_of(refreshed(ada)) is None
    assert events("person.role")[-1].changes == {"role": ["auditor", "none"]}
    assert len(events("auth.sign_in")) == 3


def test_the_last_administrator_keeps_the_role_when_the_provider_drops_their_group(
    live_server, page, single_sign_on, caplog
):
    ada = known_person(single_sign_on, "ada", people.ADMINISTRATOR)
    single_sign_on.set_person("ada", groups=[])
    sign_in_with_provider(page, live_server, "ada")
    page.wait_for_url(f"{live_server.url}/")  # let in all the same
    assert role_of(refreshed(ada)) == people.ADMINISTRATOR
    assert not events("person.role")
    assert "ada keeps their role" in caplog.text and "last active administrator" in caplog.text


def test_without_a_groups_mapping_roles_are_left_as_they_are(live_server, page, single_sign_on, settings):
    settings.OIDC_ADMINISTRATOR_GROUPS = settings.OIDC_AUDITOR_GROUPS = []
    ben = known_person(single_sign_on, "ben", people.ADMINISTRATOR)  # ben is an auditor at the provider
    sign_in_with_provider(page, live_server, "ben")
    page.wait_for_url(f"{live_server.url}/")
    assert role_of(refreshed(ben)) == people.ADMINISTRATOR
    assert not events("person.role")


# --- people the provider knows and Strongroom does not ------------------------------------


def test_an_unknown_person_is_refused_when_nobody_is_created_just_in_time(live_server, page, single_sign_on):
    sign_in_with_provider(page, live_server, "cleo")
    page.wait_for_url(f"{live_server.url}/login/")
    assert NOT_SET_UP in page.locator(".flash-error").inner_text()
    shoot(page, "sign-in-sso-not-set-up")
    assert not User.objects.filter(username="cleo").exists()
    assert not SingleSignOnIdentity.objects.exists()
    (refused,) = events("auth.sso_refused")
    assert refused.changes == {
        "reason": "unknown",
        "issuer": single_sign_on.issuer,
        "subject": PEOPLE["cleo"]["sub"],
        "username": "cleo",
    }
    page.goto(f"{live_server.url}/")
    page.wait_for_url(f"{live_server.url}/login/?next=/")  # not signed in


def test_just_in_time_creation_makes_the_person_with_the_role_of_their_groups(
    live_server, page, single_sign_on, settings
):
    settings.OIDC_CREATE_USERS = True
    local_ben = User.objects.create_user("ben", "other-ben@example.org", "a password of his own")
    sign_in_with_provider(page, live_server, "ben")
    page.wait_for_url(f"{live_server.url}/")

    # The local "ben" is someone else (matched by subject, never by name or e-mail): a new person.
    created = User.objects.get(sso_identities__subject=PEOPLE["ben"]["sub"])
    assert created.username == "ben-2" and created.email == "ben@example.org"
    assert not created.has_usable_password()
    assert role_of(created) == people.AUDITOR
    assert refreshed(local_ben).sso_identities.count() == 0 and refreshed(local_ben).has_usable_password()
    actor = f"sso: {urlsplit(single_sign_on.issuer).netloc}"
    (made,) = events("person.create")
    assert made.actor_label == actor and made.changes["role"] == "auditor"
    (linked,) = events("person.sso_identity")
    assert linked.changes == {"issuer": single_sign_on.issuer, "subject": PEOPLE["ben"]["sub"], "how": "created"}
    assert events("auth.sign_in")[0].actor_label == "ben-2"


def test_linking_by_user_name_needs_its_setting_and_never_takes_a_break_glass_account(
    live_server, browser, single_sign_on, settings
):
    cleo = User.objects.create_user("cleo", "cleo@example.org")
    with fresh_page(browser) as page:
        sign_in_with_provider(page, live_server, "cleo")
        page.get_by_text(NOT_SET_UP).wait_for()

    settings.OIDC_LINK_EXISTING_USERS = True
    settings.PASSWORD_SIGN_IN, settings.BREAK_GLASS_USERS = "break-glass-only", ["ada"]
    ada = local_administrator("ada")
    with fresh_page(browser) as page:
        sign_in_with_provider(page, live_server, "ada")
        page.get_by_text(NOT_SET_UP).wait_for()
    assert not refreshed(ada).sso_identities.exists()

    with fresh_page(browser) as page:
        sign_in_with_provider(page, live_server, "cleo")
        page.wait_for_url(f"{live_server.url}/")
    assert refreshed(cleo).sso_identities.get().subject == PEOPLE["cleo"]["sub"]
    assert events("person.sso_identity")[0].changes["how"] == "linked by user name"


# --- refusals -----------------------------------------------------------------------------


def test_a_deactivated_person_is_refused_though_the_provider_vouches_for_them(live_server, page, single_sign_on):
    root = local_administrator()
    ada = known_person(single_sign_on, "ada")
    sign_in_with_provider(page, live_server, "ada")
    page.wait_for_url(f"{live_server.url}/")

    people.deactivate(root, refreshed(ada))
    page.goto(f"{live_server.url}/")  # the session ends at the next request
    page.wait_for_url(f"{live_server.url}/login/?next=/")

    page.click(f"text={BUTTON}")  # the provider still knows them: no login page there this time
    page.wait_for_url(f"{live_server.url}/login/")
    assert "Your Strongroom account (ada) is deactivated; ask an administrator." in page.content()
    (refused,) = events("auth.sso_refused")
    assert refused.changes["reason"] == "deactivated" and refused.object_id == str(ada.pk)
    assert len(events("auth.sign_in")) == 1


def test_a_replayed_answer_is_refused(live_server, browser, single_sign_on):
    known_person(single_sign_on, "ada")
    callbacks = []
    with fresh_page(browser) as page:
        page.on("request", lambda r: callbacks.append(r.url) if "/login/sso/callback/" in r.url else None)
        sign_in_with_provider(page, live_server, "ada")
        page.wait_for_url(f"{live_server.url}/")
        page.click("button:has-text('Log out')")
        page.wait_for_url(f"{live_server.url}/login/")

        page.goto(callbacks[0])  # the same browser: its state was spent
        page.wait_for_url(f"{live_server.url}/login/")
        assert NOT_COMPLETED in page.locator(".flash-error").inner_text()
        assert page.locator(f"text={BUTTON}").is_visible()

    with fresh_page(browser) as other:  # another browser, which never started a sign-in
        other.goto(callbacks[0])
        other.wait_for_url(f"{live_server.url}/login/")
        assert NOT_COMPLETED in other.locator(".flash-error").inner_text()
    assert len(events("auth.sign_in")) == 1
    # Anyone can send such a request as often as they like: logged, not written into the trail.
    assert not events("auth.sso_refused")


def test_an_id_token_with_another_nonce_is_refused(live_server, page, single_sign_on, caplog):
    """Strongroom's redirect to the provider is changed on its way: the state
    still matches, the ID token's nonce does not."""
    known_person(single_sign_on, "ada")

    def other_nonce(route):
        answer = route.fetch(max_redirects=0)
        parts = urlsplit(answer.headers["location"])
        query = dict(parse_qsl(parts.query))
        assert query["nonce"]
        query["nonce"] = "not-the-nonce-strongroom-sent"
        route.fulfill(status=302, headers={"location": parts._replace(query=urlencode(query)).geturl()})

    page.route(re.compile(re.escape(f"{live_server.url}/login/sso/start/")), other_nonce)
    sign_in_with_provider(page, live_server, "ada")
    page.wait_for_url(f"{live_server.url}/login/")
    assert NOT_COMPLETED in page.locator(".flash-error").inner_text()
    assert "nonce is not the one this sign-in sent" in caplog.text
    assert not events("auth.sign_in")


def test_a_forged_callback_and_an_unreachable_provider_are_refused_in_words(client, single_sign_on, settings):
    answer = client.get("/login/sso/callback/?code=made-up&state=made-up", follow=True)
    assert answer.redirect_chain[-1][0] == "/login/"
    assert NOT_COMPLETED in answer.content.decode()
    assert "_auth_user_id" not in client.session

    settings.OIDC_ISSUER = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    from accounts import oidc

    oidc.forget_provider()
    answer = client.get("/login/sso/start/", follow=True)
    assert "Signing in with Test IdP did not work just now (it did not answer)" in answer.content.decode()
    assert not AuditEvent.objects.exists()


def test_without_an_issuer_there_is_no_single_sign_on(client, settings):
    settings.OIDC_ISSUER = ""
    assert client.get("/login/sso/start/").status_code == 404
    assert client.get("/login/sso/callback/?code=x&state=y").status_code == 404
    assert BUTTON not in client.get("/login/").content.decode()
    assert "Break-glass" not in client.get("/login/").content.decode()


# --- passwords kept for the break-glass users --------------------------------------------


def test_break_glass_only_refuses_other_passwords_and_lets_the_break_glass_user_in(client, single_sign_on, settings):
    settings.PASSWORD_SIGN_IN, settings.BREAK_GLASS_USERS = "break-glass-only", ["root"]
    local_administrator("root")
    local_administrator("alice")

    refused = client.post("/login/", {"username": "alice", "password": "correct horse battery"})
    assert refused.status_code == 200
    assert PASSWORDS_KEPT in refused.content.decode()
    assert "_auth_user_id" not in client.session
    # Nor through the Django admin's own login page.
    client.post("/admin/login/", {"username": "alice", "password": "correct horse battery"})
    assert "_auth_user_id" not in client.session

    allowed = client.post("/login/", {"username": "root", "password": "correct horse battery"})
    assert allowed.status_code == 302 and allowed["Location"] == "/"
    assert client.session["_auth_user_id"] == str(User.objects.get(username="root").pk)


def test_the_sign_in_page_offers_the_provider_and_folds_the_break_glass_form(
    live_server, page, single_sign_on, settings
):
    page.goto(f"{live_server.url}/login/")
    assert page.locator(f"text={BUTTON}").is_visible()
    assert page.locator("#id_username").is_visible()  # passwords for everyone: the form is open
    shoot(page, "sign-in-sso")

    settings.PASSWORD_SIGN_IN, settings.BREAK_GLASS_USERS = "break-glass-only", ["root"]
    local_administrator("root")
    local_administrator("alice")
    page.goto(f"{live_server.url}/login/")
    assert page.locator(f"text={BUTTON}").is_visible()
    assert not page.locator("#id_username").is_visible()
    shoot(page, "sign-in-break-glass-folded")
    page.click("text=Break-glass sign-in")
    page.fill("#id_username", "alice")
    page.fill("#id_password", "correct horse battery")
    page.click("button:has-text('Log in')")
    page.get_by_text(PASSWORDS_KEPT).wait_for()  # the form stays open to say so
    assert page.locator("#id_username").input_value() == "alice"
    shoot(page, "sign-in-break-glass-refused")

    page.fill("#id_username", "root")
    page.fill("#id_password", "correct horse battery")
    page.click("button:has-text('Log in')")
    page.wait_for_url(f"{live_server.url}/")


def shoot(page, name):
    """With STRONGROOM_SCREENSHOTS set, the page at 1280 and at 390 px wide."""
    if not SHOTS:
        return
    for width in (1280, 390):
        page.set_viewport_size({"width": width, "height": 900})
        page.screenshot(path=f"{SHOTS}/{name}-{width}.png", full_page=True)
    page.set_viewport_size({"width": 1280, "height": 900})


# --- secrets --------------------------------------------------------------------------------


def test_no_secret_or_token_reaches_a_page_a_log_record_or_the_audit_trail(
    live_server, browser, single_sign_on, settings, caplog
):
    caplog.set_level(logging.DEBUG)
    settings.OIDC_CREATE_USERS = True
    before = single_sign_on.issued()
    pages = []
    with fresh_page(browser) as page:
        sign_in_with_provider(page, live_server, "ada")  # created just in time, an administrator
        page.wait_for_url(f"{live_server.url}/")
        for path in ("/", "/people/", "/audit/"):
            page.goto(f"{live_server.url}{path}")
            pages.append(page.content())
    with fresh_page(browser) as page:
        sign_in_with_provider(page, live_server, "cleo")  # no groups: no role
        page.wait_for_url(f"{live_server.url}/")
        pages.append(page.content())
    known = User.objects.get(username="ada")
    people.deactivate(local_administrator(), known)
    with fresh_page(browser) as page:
        sign_in_with_provider(page, live_server, "ada")  # refused
        page.wait_for_url(f"{live_server.url}/login/")
        pages.append(page.content())

    issued = {kind: values[len(before[kind]) :] for kind, values in single_sign_on.issued().items()}
    assert len(issued["codes"]) == 3 and len(issued["access_tokens"]) == 3
    secrets = [single_sign_on.client_secret, *issued["codes"], *issued["access_tokens"]]
    trail = json.dumps([[e.actor_label, e.action, e.object_repr, e.changes] for e in AuditEvent.objects.all()])
    for where in [*pages, caplog.text, trail]:
        for secret in secrets:
            assert secret not in where
        assert not JWT.search(where)
    assert {"auth.sign_in", "person.create", "auth.sso_refused"} <= {e.action for e in AuditEvent.objects.all()}


class fresh_page:
    """A page in a browser context of its own: no cookie of Strongroom's or of the provider's."""

    def __init__(self, browser):
        self.context = browser.new_context(viewport={"width": 1280, "height": 900})

    def __enter__(self):
        return self.context.new_page()

    def __exit__(self, *exc):
        self.context.close()
