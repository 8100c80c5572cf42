"""The run pages in Debian's Chromium (driven by Playwright, no browser download) against
``durapod dev``: a resumed run's timeline shows its two attempts and every checkpoint
with labels that do not overlap; the list links to it and filters; parent and child runs
link to each other; a failure's traceback shows escaped; a page needs a token (a sign-in
cookie or a bearer header) and reads the same without JavaScript.

The resumed run's page is saved as ``.durapod/screenshots/run-timeline.png``.
"""

from __future__ import annotations

import http.server
import itertools
import os
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from playwright.sync_api import (
    Browser,
    BrowserContext,
    FloatRect,
    Locator,
    Page,
    expect,
    sync_playwright,
)
from starlette.requests import Request

from durapod.api import signin
from durapod.dev.postgres import free_port
from tests.helpers import REPO, DevProcess, definition, running_dev, taskrun, wait_for

SCREENSHOTS = REPO / ".durapod" / "screenshots"
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
BEFORE, AFTER = 12, 8  # checkpoints before the eviction, and after it
NOTE = "<script>alert('not run')</script> & more"
RESUMED, PARENT, FAILED = "pages-resumed", "pages-parent", "pages-failed"


class Api:
    def __init__(self, dev: DevProcess) -> None:
        env = dev.env()
        self.url, self.token = env["DURAPOD_API_URL"], env["DURAPOD_TOKEN"]

    def run(self, name: str) -> dict[str, Any]:
        response = httpx.get(
            f"{self.url}/v1/namespaces/default/runs/{name}",
            headers={"Authorization": f"Bearer {self.token}"},
            timeout=30,
        )
        assert response.status_code == 200, response.text
        body: dict[str, Any] = response.json()
        return body


@pytest.fixture(scope="module")
def dev() -> Iterator[DevProcess]:
    with running_dev("durapod-pages-") as process:
        yield process


@pytest.fixture(scope="module")
def api(dev: DevProcess) -> Api:
    """Three runs, made at once: one evicted mid-way and resumed, one that waits for a
    child run, one that fails."""
    api = Api(dev)
    dev.apply(
        definition("page-gated", "tests.page_tasks:gated"),
        definition("page-double", "tests.tasks:slow_double"),
        definition("page-parent", "tests.tasks:parent"),
        definition("page-explode", "tests.tasks:explode", retry={"maxAttempts": 1}),
        taskrun(RESUMED, "page-gated", {"before": BEFORE, "after": AFTER, "pause": 0.1,
                                        "note": NOTE}, tags=["pages", "resumed"]),
        taskrun(PARENT, "page-parent", {"n": 21, "child": "page-double"}, tags=["pages"]),
        taskrun(FAILED, "page-explode", {"why": "<b>bad</b> input"}, tags=["pages"]),
    )  # fmt: skip
    wait_for(
        lambda: len(api.run(RESUMED)["checkpoints"]) == BEFORE, 90, "the first pod's checkpoints"
    )
    evicted = httpx.post(
        f"{dev.kube_url}/api/v1/namespaces/default/pods/{RESUMED}-1/eviction",
        json={"apiVersion": "policy/v1", "kind": "Eviction", "metadata": {"name": f"{RESUMED}-1"}},
    )
    assert evicted.status_code == 201, evicted.text
    for name, phase in ((RESUMED, "Succeeded"), (PARENT, "Succeeded"), (FAILED, "Failed")):
        run = dev.wait_phase(name, "Succeeded", "Failed", timeout=90)
        assert run["status"]["phase"] == phase, run["status"]
    return api


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield launched
        launched.close()


def _signed_in(browser: Browser, api: Api, java_script: bool = True) -> BrowserContext:
    """A fresh browser profile, signed in through the form (which needs no JavaScript)."""
    context = browser.new_context(
        base_url=api.url, java_script_enabled=java_script, viewport={"width": 1280, "height": 900}
    )
    page = context.new_page()
    page.goto("/signin")
    page.fill("#token", api.token)
    page.click("form.signin button[type=submit]")
    expect(page).to_have_url(f"{api.url}/runs")
    page.close()
    return context


@pytest.fixture(scope="module")
def signed_in(browser: Browser, api: Api) -> Iterator[BrowserContext]:
    context = _signed_in(browser, api)
    yield context
    context.close()


@pytest.fixture
def page(signed_in: BrowserContext) -> Iterator[Page]:
    page = signed_in.new_page()
    yield page
    page.close()


def _boxes(locator: Locator) -> list[FloatRect]:
    boxes = [locator.nth(i).bounding_box() for i in range(locator.count())]
    assert all(box is not None for box in boxes)
    return [box for box in boxes if box is not None]


def _overlap(a: FloatRect, b: FloatRect) -> bool:
    """Whether two boxes share any area (touching edges do not count)."""
    return (
        a["x"] < b["x"] + b["width"]
        and b["x"] < a["x"] + a["width"]
        and a["y"] < b["y"] + b["height"]
        and b["y"] < a["y"] + a["height"]
    )


def _none_overlap(*groups: Locator) -> None:
    boxes = [box for group in groups for box in _boxes(group)]
    for a, b in itertools.combinations(boxes, 2):
        assert not _overlap(a, b), (a, b)


def _labels_fit(page: Page) -> None:
    """Checkpoint labels and ticks overlap nothing, no leader line crosses a label, every
    label shows its whole text, and all stay inside the time axis."""
    labels = page.locator(".mark-label")
    _none_overlap(labels, page.locator(".tick"))
    for leader in _boxes(page.locator(".leader")):
        assert not any(_overlap(leader, label) for label in _boxes(labels))
    clipped = labels.evaluate_all(
        "els => els.filter(e => e.scrollWidth > e.clientWidth).map(e => e.textContent)"
    )
    assert clipped == []
    track = page.locator(".checkpoints-row .track").bounding_box()
    assert track is not None
    for label in _boxes(labels):
        assert track["x"] <= label["x"]
        assert label["x"] + label["width"] <= track["x"] + track["width"] + 0.5


def test_the_resumed_runs_timeline_shows_two_attempts_and_every_checkpoint(
    page: Page, api: Api
) -> None:
    record = api.run(RESUMED)
    assert len(record["checkpoints"]) == BEFORE + AFTER
    page.goto(f"/runs/default/{RESUMED}")
    expect(page.locator("h1")).to_contain_text(RESUMED)
    expect(page.locator("h1 .phase")).to_have_text("Succeeded")

    bars = page.locator(".lane-row.attempt")
    expect(bars).to_have_count(2)
    expect(bars.nth(0).locator(".lane-label")).to_contain_text("Pod 1 · attempt 1")
    expect(bars.nth(0).locator(".outcome")).to_have_text("Evicted")
    expect(bars.nth(1).locator(".lane-label")).to_contain_text("Pod 2 · attempt 1")
    expect(bars.nth(1).locator(".outcome")).to_have_text("Succeeded")
    expect(bars.nth(1).locator(".lane-label")).to_contain_text("resume")
    for bar in (bars.nth(0), bars.nth(1)):
        expect(bar.locator(".seg.running")).to_be_visible()

    # Every checkpoint is a mark on the axis and a row of the table; labels cover them all.
    expect(page.locator(".marks .mark")).to_have_count(len(record["checkpoints"]))
    expect(page.locator("table.checkpoints tbody tr")).to_have_count(BEFORE + AFTER)
    expect(page.locator(".checkpoints-row .lane-label")).to_contain_text(
        f"Checkpoints ({BEFORE + AFTER})"
    )
    assert page.locator(".mark-label").count() >= 1
    _labels_fit(page)
    page.set_viewport_size({"width": 900, "height": 900})  # the narrowest track the CSS allows
    track = page.locator(".checkpoints-row .track").bounding_box()
    assert track is not None and round(track["width"]) == 720
    _labels_fit(page)
    page.set_viewport_size({"width": 1280, "height": 900})

    # Why the second pod came: the eviction, resumed from the last checkpoint.
    rows = page.locator("tr.attempt-row")
    expect(rows).to_have_count(2)
    expect(rows.nth(0)).to_contain_text(
        f"pod 1 was disrupted (evicted, preempted or deleted): resumed in pod 2 from "
        f"checkpoint step-{BEFORE}, without spending an attempt"
    )
    expect(rows.nth(1)).to_contain_text("pod 2 succeeded: the run is done")

    # Input and output, escaped (the note's script is text, not a script).
    expect(page.locator("#input")).to_contain_text(f'"before": {BEFORE}')
    expect(page.locator("#input")).to_contain_text(NOTE)
    expect(page.locator("#output")).to_contain_text(f'"sum": {sum(range(1, BEFORE + AFTER + 1))}')
    assert page.locator("script").count() == 0
    expect(page.locator(".summary")).to_contain_text("resumed")  # its tag

    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    path = SCREENSHOTS / "run-timeline.png"
    page.screenshot(path=str(path), full_page=True)
    print(f"screenshot of the resumed run's timeline: {path}")
    assert path.stat().st_size > 0


def test_the_runs_list_links_to_each_timeline_filters_and_pages(page: Page, api: Api) -> None:
    page.goto("/runs")
    for name in (RESUMED, PARENT, FAILED):
        expect(page.locator("a.run-link", has_text=name).first).to_be_visible()
    page.locator("a.run-link", has_text=RESUMED).click()
    expect(page).to_have_url(f"{api.url}/runs/default/{RESUMED}")
    expect(page.locator("h1")).to_contain_text(RESUMED)

    page.goto("/runs?phase=Failed")
    expect(page.locator("a.run-link")).to_have_text([FAILED])
    page.goto("/runs")
    page.select_option("select[name=phase]", "Succeeded")
    page.fill("input[name=tag]", "resumed")
    page.click("form.filters button[type=submit]")
    expect(page.locator("a.run-link")).to_have_text([RESUMED])
    page.screenshot(path=str(SCREENSHOTS / "runs-list.png"), full_page=True)

    page.goto("/runs?tag=pages&limit=2")
    first = page.locator("a.run-link").all_inner_texts()
    assert len(first) == 2
    page.locator("nav.pager a.next").click()
    expect(page.locator("a.run-link")).to_have_count(1)
    assert {*first, page.locator("a.run-link").inner_text()} == {RESUMED, PARENT, FAILED}
    expect(page.locator("nav.pager a.next")).to_have_count(0)

    page.goto("/runs?phase=Nonsense")
    expect(page.locator(".problem")).to_contain_text("there is no phase 'Nonsense'")


def test_parent_and_child_link_to_each_other_and_the_wait_for_the_child_shows(
    page: Page, api: Api
) -> None:
    page.goto(f"/runs/default/{PARENT}")
    expect(page.locator(".lane-row.attempt .outcome")).to_have_text(["Suspended", "Succeeded"])
    child = page.locator("#children a.child-link")
    expect(child).to_have_count(1)
    name = child.inner_text()
    assert name.startswith(f"{PARENT}-")
    expect(page.locator(".waits .seg.wait-child")).to_have_count(1)
    expect(page.locator("table.waits-table")).to_contain_text(f"waiting for child run {name}")
    expect(page.locator("tr.attempt-row").nth(1)).to_contain_text(
        f"resumed after child run {name} ended"
    )
    expect(page.locator("#output")).to_contain_text('"child said": 42')

    child.click()
    expect(page).to_have_url(f"{api.url}/runs/default/{name}")
    expect(page.locator("#output")).to_contain_text("42")
    page.locator("#parent a.parent-link").click()
    expect(page).to_have_url(f"{api.url}/runs/default/{PARENT}")
    page.screenshot(path=str(SCREENSHOTS / "run-timeline-parent.png"), full_page=True)


def test_a_failed_runs_page_shows_its_error_and_traceback_as_text(page: Page, api: Api) -> None:
    page.goto(f"/runs/default/{FAILED}")
    expect(page.locator("h1 .phase")).to_have_text("Failed")
    expect(page.locator("#error .problem")).to_contain_text("ValueError")
    traceback = page.locator("#error pre.traceback")
    expect(traceback).to_contain_text("Traceback (most recent call last)")
    expect(traceback).to_contain_text("ValueError: <b>bad</b> input")  # shown, not rendered
    assert page.locator("#error b", has_text="bad").count() == 0
    expect(page.locator(".lane-row.attempt .outcome")).to_have_text(["TaskError"])


def test_pages_need_a_token_and_sign_in_sets_an_http_only_lax_cookie(
    browser: Browser, api: Api
) -> None:
    path = f"/runs/default/{RESUMED}"
    with httpx.Client(base_url=api.url, timeout=30) as client:
        refused = client.get(path)
        assert refused.status_code == 303
        assert refused.headers["location"] == f"/signin?next=%2Fruns%2Fdefault%2F{RESUMED}"
        forged = client.get(path, headers={"Cookie": "durapod_token=not-a-token"})
        assert forged.status_code == 303
        bearer = client.get(path, headers={"Authorization": f"Bearer {api.token}"})
        assert bearer.status_code == 200 and bearer.headers["content-type"].startswith("text/html")
        assert "script-src" not in bearer.headers["content-security-policy"]
        assert "default-src 'none'" in bearer.headers["content-security-policy"]
        # The cookie is for pages only: the JSON API still wants the bearer header.
        json_api = client.get(
            f"/v1/namespaces/default/runs/{RESUMED}",
            headers={"Cookie": f"durapod_token={api.token}"},
        )
        assert json_api.status_code == 401
        wrong = client.post("/signin", data={"token": "wrong", "next": "/runs"})
        assert wrong.status_code == 401 and "That token was not accepted" in wrong.text
        away = client.post("/signin", data={"token": api.token, "next": "//elsewhere.example/"})
        assert (away.status_code, away.headers["location"]) == (303, "/runs")
        form = client.get("/signin", params={"next": '/runs"><script>x</script>'})
        assert "<script>x" not in form.text and "&#34;&gt;&lt;script&gt;x" in form.text

    context = browser.new_context(base_url=api.url)
    try:
        page = context.new_page()
        page.goto(path)
        expect(page).to_have_url(f"{api.url}/signin?next=%2Fruns%2Fdefault%2F{RESUMED}")
        page.fill("#token", api.token)
        page.click("form.signin button[type=submit]")
        expect(page).to_have_url(f"{api.url}{path}")
        [cookie] = context.cookies()
        assert (cookie["name"], cookie["httpOnly"], cookie["sameSite"]) == (
            "durapod_token",
            True,
            "Lax",
        )
        page.click("form.signout button")
        expect(page).to_have_url(f"{api.url}/signin")
        assert context.cookies() == []
        page.goto(path)
        expect(page).to_have_url(f"{api.url}/signin?next=%2Fruns%2Fdefault%2F{RESUMED}")
    finally:
        context.close()


@pytest.mark.parametrize(
    ("headers", "allowed"),
    [
        ({"sec-fetch-site": "same-origin"}, True),
        ({"sec-fetch-site": "none"}, True),
        ({"sec-fetch-site": "same-site", "origin": "http://api.test"}, False),
        ({"sec-fetch-site": "cross-site", "origin": "http://api.test"}, False),
        ({"origin": "http://api.test"}, True),
        ({"origin": "http://API.test"}, True),
        ({"origin": "http://api.test:8080"}, False),
        ({"origin": "https://evil.example"}, False),
        ({"origin": "null"}, False),
        ({}, True),  # no browser: curl, a script
    ],
)
def test_a_form_counts_only_when_posted_from_this_site(
    headers: dict[str, str], allowed: bool
) -> None:
    raw = [(k.encode(), v.encode()) for k, v in {"host": "api.test", **headers}.items()]
    request = Request({"type": "http", "method": "POST", "path": "/signin", "headers": raw})
    assert signin.from_this_site(request) is allowed


def test_another_sites_form_cannot_sign_a_browser_in(browser: Browser, api: Api) -> None:
    """Login CSRF: a page on another site (localhost, not 127.0.0.1) posts the sign-in form
    with its own token. The browser would keep the SameSite cookie its answer sets
    (a top-level navigation), and so read the pages as that token's owner."""
    assert api.url.startswith("http://127.0.0.1:")
    form = (
        f'<form method="post" action="{api.url}/signin">'
        f'<input name="token" value="{api.token}"><input name="next" value="/runs"></form>'
        "<script>document.forms[0].submit()</script>"
    ).encode()

    class Attacker(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(200)
            self.send_header("Content-Type", "text/html")
            self.end_headers()
            self.wfile.write(form)

        def log_message(self, *_: Any) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Attacker)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    context = browser.new_context()
    try:
        page = context.new_page()
        with page.expect_response(f"{api.url}/signin") as posted:
            page.goto(f"http://localhost:{server.server_address[1]}/")
        assert posted.value.status == 403
        expect(page.locator(".problem")).to_contain_text("posted from another site")
        assert context.cookies() == []
        # Signing out is refused alike (it would not need the cookie to be sent).
        refused = context.request.post(f"{api.url}/signout", headers={"Origin": "http://x.test"})
        assert refused.status == 403
    finally:
        context.close()
        server.shutdown()
        server.server_close()


@pytest.mark.parametrize(
    ("scheme", "forwarded", "secure"),
    [
        ("https", None, True),
        ("http", None, False),  # ``durapod dev`` on loopback: the cookie must still be sent
        ("http", "https", True),  # a proxy that ended TLS (uvicorn trusts only loopback's)
        ("http", "HTTPS, http", True),
        ("http", "http", False),
    ],
)
def test_the_cookie_is_secure_whenever_the_browser_used_https(
    scheme: str, forwarded: str | None, secure: bool
) -> None:
    raw = [(b"host", b"api.test")]
    if forwarded is not None:
        raw.append((b"x-forwarded-proto", forwarded.encode()))
    scope = {"type": "http", "scheme": scheme, "path": "/signin", "headers": raw}
    assert signin.over_https(Request(scope)) is secure


def test_a_page_reads_the_same_without_javascript(
    browser: Browser, signed_in: BrowserContext, api: Api
) -> None:
    plain = _signed_in(browser, api, java_script=False)
    try:
        texts = []
        for context in (signed_in, plain):
            page = context.new_page()
            page.goto(f"/runs/default/{RESUMED}")
            expect(page.locator(".lane-row.attempt")).to_have_count(2)
            expect(page.locator(".marks .mark")).to_have_count(BEFORE + AFTER)
            texts.append(page.inner_text("main"))
            page.close()
        assert texts[0] == texts[1]
    finally:
        plain.close()


def test_an_unknown_run_is_a_404_page(page: Page) -> None:
    response = page.goto("/runs/default/no-such-run")
    assert response is not None and response.status == 404
    expect(page.locator("h1")).to_have_text("Not Found")
    expect(page.locator(".problem")).to_contain_text('no run "no-such-run"')


def _listening(url: str) -> bool:
    try:
        return httpx.get(f"{url}/healthz", timeout=5).status_code == 200
    except httpx.TransportError:
        return False


def test_a_page_answers_503_in_html_while_the_database_is_down(tmp_path: Path) -> None:
    """``python -m durapod.api`` with nothing listening where its PostgreSQL should be."""
    port = free_port()
    env = {
        **os.environ,
        "DATABASE_URL": f"postgresql://postgres@127.0.0.1:{free_port()}/nowhere",
        "DURAPOD_API_TOKENS": "pages-token",
        "DURAPOD_DATABASE_TIMEOUT": "0.5",
    }
    argv = [sys.executable, "-m", "durapod.api", "--host", "127.0.0.1", "--port", str(port)]
    with (tmp_path / "api.log").open("w") as log:
        process = subprocess.Popen(argv, env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        url = f"http://127.0.0.1:{port}"
        wait_for(lambda: _listening(url), 60, "the API to listen")
        page = httpx.get(f"{url}/runs", headers={"Authorization": "Bearer pages-token"})
        assert page.status_code == 503 and page.headers["retry-after"] == "2"
        assert page.headers["content-type"].startswith("text/html")
        assert "the database is unavailable" in page.text
    finally:
        process.terminate()
        process.wait(30)
