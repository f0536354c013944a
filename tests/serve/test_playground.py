"""The playground page at `/`: served without a key, self-contained, and working in a real headless Chromium.

The browser tests drive Debian's chromium (/usr/bin/chromium, never a downloaded browser) through Playwright
against real servers of the tiny random model, whose completions are printable text that never ends early,
so a suggestion always appears. Screenshots go to pytest's tmp dir and, when CODEKILN_ARTIFACTS is set, there.
"""

from __future__ import annotations

import os
import re
import shutil
from pathlib import Path

import pytest

from codekiln.serve import Settings
from servers import start
from serve_client import get, post

CHROMIUM = "/usr/bin/chromium"
FLAGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
         "--disable-sync", "--no-first-run"]
TIMEOUT_MS = 60_000  # generous: the test machine is shared with other work
KEY = "sesame-0123"
KEYED = Settings(model_name="tiny", api_keys=(KEY,), disconnect_poll_s=0.005)
HEADER = "def total(items, limit=3):"


@pytest.fixture(scope="module")
def keyed(serve_run):
    """A server of the tiny model that needs an API key."""
    with start(serve_run, KEYED) as served:
        yield served


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    """A headless Chromium (Debian's) with a fresh profile, through Playwright."""
    if not os.path.exists(CHROMIUM):
        pytest.skip(f"{CHROMIUM} is missing (apt-get install chromium): the playground's browser tests need it")
    sync_api = pytest.importorskip("playwright.sync_api", reason="the playwright package is missing (pip install "
                                                                 "playwright; never `playwright install`)")
    profile = tmp_path_factory.mktemp("chromium-profile")
    with sync_api.sync_playwright() as pw:
        context = pw.chromium.launch_persistent_context(str(profile), executable_path=CHROMIUM, headless=True,
                                                        args=FLAGS, viewport={"width": 1000, "height": 600})
        context.set_default_timeout(TIMEOUT_MS)
        try:
            yield context
        finally:
            context.close()


@pytest.fixture
def page(browser):
    """A fresh tab (its own sessionStorage) that records the page's completion requests and answers."""
    tab = browser.new_page()
    tab.completions = []  # (request body, response) of each answered /v1/completions request
    tab.on("response", lambda r: tab.completions.append((r.request.post_data_json, r))
           if r.url.endswith("/v1/completions") else None)
    yield tab
    tab.close()


def _answer_for(page, prompt: str, suffix: str | None = None):
    """The JSON answer (status 200) to the page's latest request for this prompt and suffix."""
    for body, response in reversed(page.completions):
        if body["prompt"] == prompt and body.get("suffix") == suffix and response.status == 200:
            return body, response.json()
    raise AssertionError(f"the page sent no answered request for {prompt!r} / {suffix!r}")


def _screenshot(page, tmp_path: Path, name: str) -> Path:
    """A PNG of the page in pytest's tmp dir, copied to $CODEKILN_ARTIFACTS when it is set."""
    path = tmp_path / name
    page.screenshot(path=str(path))
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    if os.environ.get("CODEKILN_ARTIFACTS"):
        out = Path(os.environ["CODEKILN_ARTIFACTS"])
        out.mkdir(parents=True, exist_ok=True)
        shutil.copy(path, out / name)
    return path


def _wait_count(page, name: str, value: int) -> None:
    page.wait_for_function("([name, value]) => document.getElementById('counts').dataset[name] === String(value)",
                           arg=[name, value])


def test_page_needs_no_key_and_loads_nothing_from_elsewhere(keyed):
    r = get(keyed.url, "/")
    assert r.status == 200 and r.headers["content-type"].startswith("text/html")
    html = r.raw.decode()
    assert "<textarea" in html and "v1/completions" in html and "sessionStorage" in html
    assert "http://" not in html and "https://" not in html
    refs = re.findall(r"""\b(?:src|href|action)\s*=\s*["']?([^"'\s>]*)""", html, re.I)
    refs += re.findall(r"""url\(\s*["']?([^"')]*)""", html) + re.findall(r"""@import\s+["']?([^"';\s]*)""", html)
    assert not [ref for ref in refs if re.match(r"(?:[a-z][a-z0-9+.-]*:)?//", ref, re.I)]
    csp = r.headers["content-security-policy"]
    assert "default-src 'none'" in csp and "connect-src 'self'" in csp
    # The page is open; the API behind it is not.
    assert post(keyed.url, "/v1/completions", {"prompt": HEADER}).status == 401
    assert get(keyed.url, "/v1/models").status == 401


def test_suggestion_appears_tab_accepts_escape_dismisses(page, server, tmp_path):
    page.goto(server.url + "/")
    code, ghost = page.locator("#code"), page.locator("#mirror .ghost")
    code.click()
    page.keyboard.type(HEADER)
    ghost.wait_for(state="visible")
    suggestion = ghost.text_content()
    body, answer = _answer_for(page, HEADER)
    assert suggestion and suggestion == answer["choices"][0]["text"]
    assert "suffix" not in body and body["max_tokens"] == 48 and body["temperature"] == 0
    assert code.input_value() == HEADER  # ghost text is drawn, not typed
    # Latency and tokens of this completion are shown.
    assert re.fullmatch(r"\d+ ms", page.locator("#latency").text_content())
    tokens = answer["usage"]["completion_tokens"]
    assert 1 <= tokens <= 48 and page.locator("#tokens").text_content().startswith(f"{tokens} tokens")
    assert page.locator("#model").text_content() == "tiny"
    _screenshot(page, tmp_path, "playground-suggestion.png")

    page.keyboard.press("Tab")
    assert code.input_value() == HEADER + suggestion
    assert page.evaluate("document.activeElement.id") == "code"  # Tab did not move the focus
    _wait_count(page, "accepted", 1)

    # Accepting asks for the next suggestion; Escape dismisses it and leaves the text alone.
    ghost.wait_for(state="visible")
    assert _answer_for(page, HEADER + suggestion)[1]["choices"][0]["text"] == ghost.text_content()
    page.keyboard.press("Escape")
    ghost.wait_for(state="detached")
    assert code.input_value() == HEADER + suggestion
    page.wait_for_timeout(600)  # past the debounce: Escape asked for nothing new
    assert ghost.count() == 0 and page.locator("#state").text_content() == "dismissed"


def test_text_after_the_cursor_is_sent_as_suffix(page, server, tmp_path):
    prefix, suffix = "def total(items):\n    ", "\n\n\nprint(total([1, 2, 3]))\n"
    page.goto(server.url + "/")
    code, ghost = page.locator("#code"), page.locator("#mirror .ghost")
    code.fill(prefix + suffix)
    # Move the cursor to the end of the body's empty line: a fill-in-the-middle request from there.
    page.keyboard.press("Control+Home")
    page.keyboard.press("ArrowDown")
    page.keyboard.press("End")
    ghost.wait_for(state="visible")
    body, answer = _answer_for(page, prefix, suffix)
    middle = answer["choices"][0]["text"]
    assert ghost.text_content() == middle
    # The suggestion is drawn at the cursor, the rest of the file after it.
    assert page.locator("#mirror").text_content() == prefix + middle + suffix + "\n"
    _screenshot(page, tmp_path, "playground-fim.png")
    page.keyboard.press("Tab")
    assert code.input_value() == prefix + middle + suffix
    assert page.evaluate("document.getElementById('code').selectionStart") == len(prefix + middle)


def test_typing_again_cancels_the_request_on_the_wire(page, server):
    from playwright.sync_api import Error

    held = []

    def hold_first(route):
        if held:
            route.continue_()
        else:
            held.append(route)  # never answered: it stays in flight until the page drops it

    page.route("**/v1/completions", hold_first)
    page.goto(server.url + "/")
    page.locator("#code").click()
    page.keyboard.type("def area(")
    while not held:
        page.wait_for_timeout(20)
    assert held[0].request.post_data_json["prompt"] == "def area("
    page.keyboard.type("w, h):")
    _wait_count(page, "cancelled", 1)
    ghost = page.locator("#mirror .ghost")
    ghost.wait_for(state="visible")
    assert ghost.text_content() == _answer_for(page, "def area(w, h):")[1]["choices"][0]["text"]
    try:
        held[0].abort()
    except Error:
        pass  # the page has already dropped it


def test_keyed_server_asks_for_the_key_once_per_session(page, keyed, tmp_path):
    page.goto(keyed.url + "/")
    form, ghost, code = page.locator("#key-form"), page.locator("#mirror .ghost"), page.locator("#code")
    code.click()
    page.keyboard.type(HEADER)
    form.wait_for(state="visible")
    assert ghost.count() == 0
    _screenshot(page, tmp_path, "playground-key.png")

    page.fill("#key-input", "not-the-key")
    page.press("#key-input", "Enter")
    page.wait_for_function("() => document.getElementById('key-message').textContent.includes('did not accept')")
    form.wait_for(state="visible")
    page.fill("#key-input", KEY)
    page.press("#key-input", "Enter")
    ghost.wait_for(state="visible")
    assert form.is_hidden() and code.input_value() == HEADER
    assert ghost.text_content() == _answer_for(page, HEADER)[1]["choices"][0]["text"]
    assert page.evaluate("sessionStorage.getItem('codekiln-api-key')") == KEY
    statuses = [(r.request.headers.get("authorization"), r.status) for _, r in page.completions]
    assert statuses[0] == (None, 401) and (f"Bearer {KEY}", 200) in statuses
    assert ("Bearer not-the-key", 401) in statuses

    # The key lasts for the tab's session: after a reload the page completes without asking.
    page.reload()
    page.locator("#code").click()
    page.keyboard.type("class Point:")
    ghost.wait_for(state="visible")
    assert form.is_hidden()
    assert _answer_for(page, "class Point:")[1]["choices"][0]["text"] == ghost.text_content()
