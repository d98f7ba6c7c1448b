"""The token beyond loopback: the dashboard's token form in Chromium, and POST /api/session.

The app is built as `serve --host 0.0.0.0` builds it (a token required) but served on 127.0.0.1.
Each browser test gets a context of its own: cookies are per host, not per port, so a shared
context would carry one test's token cookie into the next.
"""

from __future__ import annotations

import json
import urllib.request
from collections.abc import Iterator
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient

from otelstats.config import Settings
from otelstats.store import Store
from otelstats.web import TOKEN_COOKIE, create_app
from tests.browser.conftest import CSP_RECORDER
from tests.browser.support import TZ, Site, Watch, assert_cards_match, seed_records, shot
from tests.servers import serving

TOKEN = "s3cret"
PROTECTED = "This dashboard is protected. Enter the token (OTELSTATS_TOKEN)"
STATS_7D = f"/api/stats?period=7d&tz={TZ.replace('/', '%2F')}"


def _team_app(store: Store, token: str | None = TOKEN) -> Flask:
    # A non-loopback host is what makes create_app demand the token.
    return create_app(
        {"TESTING": True}, settings=Settings(host="0.0.0.0", token=token), store=store
    )


@pytest.fixture(scope="module")
def locked_site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    store = Store.open(tmp_path_factory.mktemp("locked") / "stats.db")
    store.write(seed_records(10))
    try:
        with serving(_team_app(store)) as url:
            yield Site(url, store)
    finally:
        store.dispose()


def _with_bearer(site: Site, path: str) -> Any:
    req = urllib.request.Request(site.url + path, headers={"Authorization": f"Bearer {TOKEN}"})
    with urllib.request.urlopen(req, timeout=10) as resp:
        return json.loads(resp.read())


@pytest.fixture
def own_context(browser: Any) -> Iterator[Any]:
    """A context with no cookies yet (a first visit)."""
    ctx = browser.new_context(
        timezone_id=TZ, locale="en-US", viewport={"width": 1280, "height": 900}
    )
    ctx.add_init_script(CSP_RECORDER)
    yield ctx
    ctx.close()


def _page(ctx: Any) -> Any:
    page = ctx.new_page()
    watch = Watch()
    page.on("dialog", lambda d: (watch.dialogs.append(d.message), d.dismiss()))
    page.on("pageerror", lambda e: watch.errors.append(str(e)))
    page.on("request", lambda r: watch.requests.append(f"{r.method} {r.url}"))
    page.watch = watch
    return page


@pytest.fixture
def page(own_context: Any) -> Any:
    return _page(own_context)


def _settle(page: Any) -> str:
    """Wait until the page stops loading; return where it ended (token, ready, error, empty)."""
    page.wait_for_function("() => !['loading', undefined].includes(document.body.dataset.state)")
    return str(page.evaluate("() => document.body.dataset.state"))


def _open(page: Any, site: Site, query: str = "") -> str:
    page.goto(site.url + "/" + query)
    return _settle(page)


def _wait_attempts(page: Any, n: int) -> None:
    page.wait_for_function(
        "n => Number(document.getElementById('token-form').dataset.attempts || 0) >= n", arg=n
    )


def _error_text(page: Any, expected: str) -> None:
    page.wait_for_function(
        "t => document.getElementById('token-error').textContent.includes(t)", arg=expected
    )


@pytest.mark.browser
def test_a_401_shows_the_token_form_not_the_error_state(page: Any, locked_site: Site) -> None:
    assert _open(page, locked_site) == "token"
    form = page.locator("#token-state")
    assert form.is_visible()
    assert PROTECTED in " ".join(form.inner_text().split())
    assert page.locator("#error-state").is_hidden()
    assert page.locator("#content").is_hidden()
    field = page.get_by_label("Token", exact=True)
    assert field.get_attribute("type") == "password"
    assert page.evaluate("() => document.activeElement.id") == "token-input"
    assert page.get_by_role("button", name="Open the dashboard").is_visible()
    assert page.get_attribute("#token-error", "aria-live") == "assertive"
    assert page.evaluate("() => window.__csp") == []
    assert page.watch.errors == []
    shot(page, "token-form")


@pytest.mark.browser
def test_a_wrong_token_says_so_and_the_form_stays_usable(
    page: Any, own_context: Any, locked_site: Site
) -> None:
    assert _open(page, locked_site) == "token"
    page.keyboard.type("not-it")  # focus is already in the field
    page.keyboard.press("Enter")
    _wait_attempts(page, 1)
    _error_text(page, "That token is not correct")
    assert page.get_attribute("#token-input", "aria-invalid") == "true"
    assert page.evaluate("() => document.activeElement.id") == "token-input"
    # Again, this time with Tab to the button: same clear answer, no lockout.
    page.keyboard.type("still-wrong")  # the wrong text was selected: typing replaces it
    assert page.input_value("#token-input") == "still-wrong"
    page.keyboard.press("Tab")
    assert page.evaluate("() => document.activeElement.id") == "token-submit"
    page.keyboard.press("Enter")
    _wait_attempts(page, 2)
    _error_text(page, "That token is not correct")
    assert _settle(page) == "token"
    assert own_context.cookies() == []
    # An empty field is answered on the page, without asking the server.
    page.fill("#token-input", "")
    page.click("#token-submit")
    _error_text(page, "Enter the token first")
    # And the right token still works after all that.
    page.fill("#token-input", TOKEN)
    page.keyboard.press("Enter")
    page.wait_for_function("() => document.body.dataset.state === 'ready'")
    posts = [r for r in page.watch.requests if r.startswith("POST ")]
    assert len(posts) == 3


@pytest.mark.browser
def test_the_right_token_loads_the_numbers_and_is_not_asked_again(
    page: Any, own_context: Any, locked_site: Site
) -> None:
    assert _open(page, locked_site) == "token"
    page.get_by_label("Token", exact=True).fill(TOKEN)
    page.get_by_role("button", name="Open the dashboard").click()
    page.wait_for_function("() => document.body.dataset.state === 'ready'")
    assert_cards_match(page, _with_bearer(locked_site, STATS_7D)["overview"])
    assert page.locator("#token-state").is_hidden()
    assert page.evaluate("() => document.activeElement.id") == "main"
    (cookie,) = own_context.cookies()
    assert (cookie["name"], cookie["value"]) == (TOKEN_COOKIE, TOKEN)
    assert cookie["httpOnly"]
    assert cookie["sameSite"] == "Strict"
    # The token went in a POST body only: never in a URL, never in web storage.
    assert not any(TOKEN in r for r in page.watch.requests), page.watch.requests
    assert page.evaluate("() => localStorage.length + sessionStorage.length") == 0
    assert page.evaluate("() => document.cookie") == ""  # HttpOnly: scripts cannot read it

    page.reload()
    assert _settle(page) == "ready"
    assert_cards_match(page, _with_bearer(locked_site, STATS_7D)["overview"])
    later = _page(own_context)  # a later visit in the same browser
    assert _open(later, locked_site, "?period=all") == "ready"
    assert_cards_match(later, _with_bearer(locked_site, STATS_7D.replace("7d", "all"))["overview"])
    posts = [r for r in page.watch.requests + later.watch.requests if r.startswith("POST ")]
    assert posts == [f"POST {locked_site.url}/api/session"]
    assert page.watch.errors == []
    assert later.watch.errors == []


@pytest.mark.browser
def test_the_query_token_still_sets_the_cookie(
    page: Any, own_context: Any, locked_site: Site
) -> None:
    assert _open(page, locked_site, f"?token={TOKEN}") == "ready"
    assert [c["name"] for c in own_context.cookies()] == [TOKEN_COOKIE]
    assert _open(page, locked_site) == "ready"
    assert page.locator("#token-state").is_hidden()


@pytest.mark.browser
def test_axe_finds_no_serious_violations_in_the_token_form(page: Any, locked_site: Site) -> None:
    from axe_playwright_python.sync_playwright import Axe

    assert _open(page, locked_site) == "token"
    page.keyboard.type("wrong")
    page.keyboard.press("Enter")
    _error_text(page, "That token is not correct")  # scan the error message's contrast too
    for scheme in ("light", "dark"):
        page.emulate_media(color_scheme=scheme)
        results = Axe().run(page)
        bad = [
            (v["id"], v["impact"], [n["target"] for n in v["nodes"]][:3])
            for v in results.response["violations"]
            if v["impact"] in ("serious", "critical")
        ]
        assert bad == [], scheme


# ---- POST /api/session through the Flask test client ------------------------------------------

SAME_ORIGIN = {"Origin": "http://localhost", "Sec-Fetch-Site": "same-origin"}


@pytest.fixture
def client(sqlite_store: Store) -> FlaskClient:
    return _team_app(sqlite_store).test_client()


def _cookie(client: FlaskClient) -> str | None:
    cookie = client.get_cookie(TOKEN_COOKIE)
    return None if cookie is None else cookie.value


def test_session_sets_the_cookie_for_the_right_token(client: FlaskClient) -> None:
    assert client.get("/api/stats?period=7d&tz=UTC").status_code == 401
    response = client.post("/api/session", json={"token": TOKEN}, headers=SAME_ORIGIN)
    assert response.status_code == 204
    set_cookie = response.headers["Set-Cookie"]
    assert set_cookie.startswith(f"{TOKEN_COOKIE}={TOKEN};")
    assert "HttpOnly" in set_cookie
    assert "SameSite=Strict" in set_cookie
    assert "Path=/" in set_cookie
    assert "Secure" not in set_cookie  # plain http here; a Secure cookie would never come back
    assert client.get("/api/stats?period=7d&tz=UTC").status_code == 200


def test_session_refuses_a_wrong_or_missing_token(client: FlaskClient) -> None:
    wrong = client.post("/api/session", json={"token": "s3cre"}, headers=SAME_ORIGIN)
    assert wrong.status_code == 401
    assert wrong.get_json() == {"error": "that token is not correct"}
    for body in ({"token": ""}, {}, ["s3cret"], {"token": 1}):
        assert client.post("/api/session", json=body, headers=SAME_ORIGIN).status_code == 400
    bearer = {"Authorization": f"Bearer {TOKEN}"}
    assert client.get("/api/session", headers=bearer).status_code == 405  # POST only
    assert "Set-Cookie" not in wrong.headers
    assert _cookie(client) is None
    assert client.get("/api/stats?period=7d&tz=UTC").status_code == 401


@pytest.mark.parametrize(
    "headers",
    [
        {"Origin": "http://evil.example", "Sec-Fetch-Site": "cross-site"},
        {"Origin": "http://evil.example"},  # an older browser without Sec-Fetch-*
        {"Origin": "http://localhost", "Sec-Fetch-Site": "cross-site"},
        {"Origin": "http://localhost", "Sec-Fetch-Site": "same-site"},  # a sibling subdomain
        {"Origin": "null", "Sec-Fetch-Site": "same-origin"},  # a sandboxed frame
        {"Sec-Fetch-Site": "same-origin"},  # no Origin: not a page of ours
        {},
    ],
)
def test_session_refuses_cross_site_requests(client: FlaskClient, headers: dict[str, str]) -> None:
    response = client.post("/api/session", json={"token": TOKEN}, headers=headers)
    assert response.status_code == 403
    assert "Set-Cookie" not in response.headers
    assert _cookie(client) is None


def test_session_wants_json_so_a_cross_site_form_cannot_post(client: FlaskClient) -> None:
    # What an HTML form (or a no-cors fetch) can send without a preflight: never accepted.
    for data, content_type in (
        ({"token": TOKEN}, "application/x-www-form-urlencoded"),
        (json.dumps({"token": TOKEN}), "text/plain"),
        ({"token": TOKEN}, "multipart/form-data"),
    ):
        response = client.post(
            "/api/session", data=data, content_type=content_type, headers=SAME_ORIGIN
        )
        assert response.status_code == 415, content_type
    assert _cookie(client) is None


def test_session_without_a_configured_token(sqlite_store: Store) -> None:
    open_client = _team_app(sqlite_store, token=None).test_client()
    response = open_client.post("/api/session", json={"token": TOKEN}, headers=SAME_ORIGIN)
    assert response.status_code == 404
    # On loopback the Host check still guards the endpoint (DNS rebinding).
    local = create_app(settings=Settings(token=TOKEN), store=sqlite_store).test_client()
    rebound = local.post(
        "/api/session",
        json={"token": TOKEN},
        headers={"Host": "evil.example", "Origin": "http://evil.example"},
    )
    assert rebound.status_code == 400
