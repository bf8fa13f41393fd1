"""Security headers on every page Strongroom serves, and no inline code in any
of them: the URL walk's pages (tests/test_url_walk.py) as a superuser, the
htmx fragments that only a POST renders, and the Django admin. A Content
Security Policy without 'unsafe-inline' for scripts only protects if no page
needs inline code, so both are checked on the same responses."""

from html.parser import HTMLParser

import pytest
from django.contrib.auth.models import User
from django.test import Client

from catalog.models import Backup
from pitr.models import ContinuousProtection
from tests.test_url_walk import walked, world  # noqa: F401 — the walk's objects, as a fixture

pytestmark = pytest.mark.django_db

# Directive: the sources it must have exactly.
REQUIRED_CSP = {
    "default-src": {"'self'"},
    "script-src": {"'self'"},
    "object-src": {"'none'"},
    "base-uri": {"'self'"},
    "frame-ancestors": {"'none'"},
    "form-action": {"'self'"},
}
OTHER_HEADERS = {
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
    "Cross-Origin-Opener-Policy": "same-origin",
}
# The admin pages a superuser opens, besides the walk (which skips the admin namespace).
ADMIN_PAGES = [
    "/admin/",
    "/admin/catalog/source/",
    "/admin/auth/user/",
    "/admin/catalog/auditevent/",
    "/admin/axes/accessattempt/",
]


def csp_directives(response):
    policy = response.get("Content-Security-Policy", "")
    directives = {}
    for part in policy.split(";"):
        name, *sources = part.split()
        directives[name] = set(sources)
    return directives


def header_problems(response, where):
    problems = []
    directives = csp_directives(response) if response.has_header("Content-Security-Policy") else {}
    if not directives:
        return [f"{where}: no Content-Security-Policy header"]
    for name, sources in REQUIRED_CSP.items():
        if directives.get(name) != sources:
            problems.append(f"{where}: CSP {name} is {sorted(directives.get(name, ()))}, not {sorted(sources)}")
    for name, sources in directives.items():
        if {"'unsafe-eval'", "'unsafe-hashes'"} & sources or (
            name.startswith("script") and "'unsafe-inline'" in sources
        ):
            problems.append(f"{where}: CSP {name} allows {sorted(sources)}")
    for name, value in OTHER_HEADERS.items():
        # Static files leave before the frame and opener headers are added: they matter for pages only.
        if response.get(name) != value and (name == "X-Content-Type-Options" or "/static/" not in where):
            problems.append(f"{where}: {name} is {response.get(name)!r}, not {value!r}")
    return problems


class InlineCode(HTMLParser):
    """Collects whatever in a page would run (or style) from inline code."""

    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.problems = []
        self.in_script = None

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag == "script":
            executable = attrs.get("type", "text/javascript") not in ("application/json", "application/ld+json")
            if executable and not attrs.get("src"):
                self.problems.append(f"<script> without src: {self.get_starttag_text()}")
            self.in_script = self.get_starttag_text() if executable else None
        if tag == "style":
            self.problems.append("a <style> element")
        for name, value in attrs.items():
            value = (value or "").strip().lower()
            if name.startswith("on"):
                self.problems.append(f"inline handler {name}= in {self.get_starttag_text()}")
            if name.startswith(("hx-on", "data-hx-on")):
                self.problems.append(f"{name} (needs eval) in {self.get_starttag_text()}")
            if value.startswith("javascript:") or (name in ("hx-vals", "hx-headers") and value.startswith("js:")):
                self.problems.append(f"script URL or js: value in {self.get_starttag_text()}")
            if name == "hx-trigger" and "[" in value:
                self.problems.append(f"hx-trigger filter (needs eval) in {self.get_starttag_text()}")

    def handle_data(self, data):
        if self.in_script and data.strip():
            self.problems.append(f"inline code in {self.in_script}")

    def handle_endtag(self, tag):
        if tag == "script":
            self.in_script = None


def inline_code(html):
    parser = InlineCode()
    parser.feed(html)
    return parser.problems


def page_problems(response, where):
    problems = header_problems(response, where)
    if response.status_code == 200 and response.get("Content-Type", "").startswith("text/html"):
        problems += [f"{where}: {p}" for p in inline_code(response.content.decode())]
    return problems


@pytest.fixture
def superuser_client(world):
    root = User.objects.create_superuser("root", "root@example.org", "correct horse battery")
    client = Client()
    client.force_login(root)
    return client


@pytest.fixture
def confirm_world(world, tmp_path):
    """The walk's objects, with every confirm dialog on show: a pinned backup,
    an orphan in the destination, continuous protection on."""
    Backup.objects.filter(pk=world["backup"].pk).update(pinned=True, hold_reason="month end")
    orphan = tmp_path / "backups" / "walk" / "left-behind.dump.partial"
    orphan.parent.mkdir(parents=True)
    orphan.write_bytes(b"half a dump")
    ContinuousProtection.objects.create(source=world["source"], enabled=True, mode=ContinuousProtection.ARCHIVE)
    return world


def test_it_checks_what_it_should():
    assert inline_code('<script>alert(1)</script><a href="javascript:x()">x</a>') == [
        "<script> without src: <script>",
        "inline code in <script>",
        'script URL or js: value in <a href="javascript:x()">',
    ]
    assert inline_code('<button onclick="go()">') and inline_code('<div hx-trigger="change[x]">')
    assert inline_code('<div hx-on:click="x">') and inline_code("<style>p{}</style>")
    assert not inline_code('<script src="/static/x.js" defer></script><script type="application/json">{}</script>')


def test_every_page_has_the_security_headers_and_no_inline_code(superuser_client, confirm_world):
    problems = []
    pages = 0
    for w in walked(confirm_world):
        response = superuser_client.get(w.url)
        problems += page_problems(response, f"GET {w.url} ({w.name})")
        pages += 1
    root = User.objects.get(username="root")
    record_pages = [
        f"/admin/catalog/source/{confirm_world['source'].pk}/change/",
        f"/admin/auth/user/{root.pk}/change/",
    ]
    for url in ADMIN_PAGES + record_pages:
        response = superuser_client.get(url)
        assert response.status_code == 200, url
        problems += page_problems(response, f"GET {url}")
    # Fragments that only a POST renders: the orphan scan (with its confirm) and the retention dry run.
    scan = superuser_client.post(f"/destinations/{confirm_world['destination'].pk}/scan/")
    assert b"data-confirm=" in scan.content and b"left-behind.dump.partial" in scan.content
    problems += page_problems(scan, "POST scan")
    assert pages > 90  # the whole walk, not a broken include's remains
    assert not problems, "\n".join(problems)


def test_the_pages_with_confirm_dialogs_ask_through_data_confirm(superuser_client, confirm_world):
    w = confirm_world
    pages = {
        "/tokens/": "Revoke Walk CI? Requests with it will be refused at once.",
        "/keys/": "Destroy mk-walk-retired? Its key file is deleted for good.",
        f"/backups/{w['backup'].pk}/": "Release this backup? Its plan’s retention rule will apply to it again.",
        f"/pitr/sources/{w['source'].pk}/protection/": "Turn continuous protection off and drop the replication slot?",
    }
    for url, question in pages.items():
        html = superuser_client.get(url).content.decode()
        assert f'data-confirm="{question}"' in html, url
        assert not inline_code(html), url


def test_anonymous_pages_and_errors_carry_the_headers_too(client, world):
    for url, status in [
        ("/login/", 200),
        ("/", 302),
        ("/no-such-page/", 302),
        ("/healthz", 200),
        ("/admin/login/", 302),  # on to our own sign-in, which asks for the second factor too
        ("/api/v1/status", 401),
        ("/static/js/strongroom.js", 200),
    ]:
        response = client.get(url)
        assert response.status_code == status, url
        assert not page_problems(response, url)
    login = client.get("/login/").content.decode()
    assert '"allowEval": false' in login and '"includeIndicatorStyles": false' in login


def test_https_responses_carry_hsts_and_plain_http_does_not(client, world, settings):
    settings.SECURE_HSTS_SECONDS = 31536000
    settings.SECURE_HSTS_INCLUDE_SUBDOMAINS = True
    secure = Client().get("/login/", secure=True)
    assert secure["Strict-Transport-Security"] == "max-age=31536000; includeSubDomains"
    assert not Client().get("/login/").has_header("Strict-Transport-Security")


def test_behind_a_tls_proxy_the_configured_header_decides(world, settings):
    settings.SECURE_HSTS_SECONDS = 31536000
    settings.SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
    proxied = Client().get("/login/", headers={"X-Forwarded-Proto": "https"})
    assert proxied["Strict-Transport-Security"].startswith("max-age=31536000")
    assert not Client().get("/login/", headers={"X-Forwarded-Proto": "http"}).has_header("Strict-Transport-Security")


def test_plain_http_is_redirected_to_https_except_the_health_check(world, settings):
    settings.SECURE_SSL_REDIRECT = True
    settings.SECURE_REDIRECT_EXEMPT = [r"^healthz$"]
    response = Client().get("/login/?next=/backups/")
    assert response.status_code == 301
    assert response["Location"] == "https://testserver/login/?next=/backups/"
    assert Client().get("/login/", secure=True).status_code == 200
    assert Client().get("/healthz").status_code == 200
