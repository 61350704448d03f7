"""The chat page at / in a real headless Chromium against a real `moestream serve` (the embedded tiny model).

The tests run in file order over one page, as one user would: load, set the API key, stream and stop, a full reply,
a bad key, and so on; each leaves the page idle for the next. The browser is Debian's `chromium`, launched by
Playwright from its system path (`playwright install` downloads from a CDN this machine cannot reach). Without
either the tests fail with the install commands: a skipped check is a failed check here.

The tiny model writes a token every couple of milliseconds, so Stop is pressed as soon as the text is seen growing;
where the whole reply still beat the click, that try is repeated rather than the server slowed down."""

from __future__ import annotations

import json
import os
import re
import shutil
import tempfile
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from tests.server.conftest import API_KEY, start_server

INSTALL = ("apt-get install -y chromium && pip install playwright==1.65.2 "
           "(and do not run `playwright install`: the system Chromium is used)")
# docs/chat-page.png is this test's screenshot: MOESTREAM_SCREENSHOT=docs/chat-page.png writes it there (a plain run
# writes a temporary file, so the suite never changes the checkout)
SCREENSHOT = Path(os.environ.get("MOESTREAM_SCREENSHOT") or Path(tempfile.gettempdir()) / "moestream-chat-page.png")
MODEL = "tiny-mixtral-novels"
LAST_REPLY = ".message.assistant >> nth=-1"
REPLY_LENGTH = "() => { const m = [...document.querySelectorAll('.message.assistant')].pop();" \
               " return m ? m.querySelector('.content').textContent.length : -1; }"
REPLY_STATE = "() => [...document.querySelectorAll('.message.assistant')].pop()?.dataset.state"


@dataclass
class Chat:
    page: object
    server_url: str
    requests: list = field(default_factory=list)  # every request the page made, as Playwright Request objects
    console_errors: list = field(default_factory=list)  # (text, url) of console messages of type error
    page_errors: list = field(default_factory=list)  # uncaught exceptions

    def send(self, text: str) -> None:
        self.page.fill("#prompt", text)
        self.page.press("#prompt", "Enter")

    def wait_idle(self, timeout_ms: float = 30_000) -> None:
        self.page.wait_for_function("document.body.dataset.busy === 'false'", timeout=timeout_ms)

    def reply_text(self) -> str:
        return self.page.locator(LAST_REPLY).locator(".content").text_content()

    def chat_requests(self) -> list:
        return [r for r in self.requests if r.url.endswith("/v1/chat/completions")]


def _playwright():
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        pytest.fail(f"the chat page test needs Playwright and Chromium: {INSTALL}", pytrace=False)
    if shutil.which("chromium") is None:
        pytest.fail(f"no `chromium` on PATH; the chat page test needs it: {INSTALL}", pytrace=False)
    return sync_playwright


@pytest.fixture(scope="module")
def chat_server():
    server = start_server("--api-key", API_KEY)
    yield server
    server.stop()


@pytest.fixture(scope="module")
def browser():
    with _playwright()() as p:
        b = p.chromium.launch(executable_path=shutil.which("chromium"), args=["--no-sandbox"])
        yield b
        b.close()


@pytest.fixture(scope="module")
def chat(browser, chat_server):
    context = browser.new_context(viewport={"width": 1280, "height": 800})
    page = context.new_page()
    page.set_default_timeout(15_000)
    c = Chat(page, chat_server.url)
    page.on("request", lambda r: c.requests.append(r))  # a lambda: Playwright tags handlers, a builtin cannot be
    page.on("console", lambda message: _record_console_error(c, message))
    page.on("pageerror", lambda e: c.page_errors.append(e))
    page.goto(chat_server.url + "/")
    yield c
    context.close()


def _record_console_error(chat: Chat, message) -> None:
    if message.type == "error":
        chat.console_errors.append((message.text, message.location.get("url", "")))


def _unexpected_console_errors(chat: Chat) -> list:
    """Console errors other than the browser's own log line for a 401 from the API, which is the page's expected
    first answer (no key yet) and the bad-key test's."""
    allowed = re.compile(r"status of 401")
    return [(t, u) for t, u in chat.console_errors if not (allowed.search(t) and urlsplit(u).path.startswith("/v1/"))]


def _foreign_requests(chat: Chat) -> list:
    origin = urlsplit(chat.server_url)
    return [r.url for r in chat.requests if urlsplit(r.url)[:2] != origin[:2]]


def _metric(server_url: str, name: str) -> float:
    with urllib.request.urlopen(server_url + "/metrics", timeout=5) as r:
        text = r.read().decode()
    return float(re.search(rf"^{name} (\S+)$", text, re.M).group(1))


def test_page_loads_with_no_errors_and_nothing_from_elsewhere(chat):
    page = chat.page
    # no key yet: the model list is refused, and the page says so rather than failing silently
    page.wait_for_function("document.querySelector('#model-status').textContent.includes('HTTP 401')")
    page.wait_for_load_state("networkidle")
    assert not chat.page_errors, chat.page_errors
    assert not _unexpected_console_errors(chat), chat.console_errors
    assert not _foreign_requests(chat), _foreign_requests(chat)
    for selector in ("#prompt", "#send", "#stop", "#new-chat", "#model", "#api-key", "#temperature", "#top-p",
                     "#max-tokens", "#seed", "#system"):
        assert page.locator(selector).count() == 1, selector
    assert page.is_disabled("#stop") and page.is_enabled("#send")
    for input_id in page.eval_on_selector_all("input, select, textarea", "els => els.map(e => e.id)"):
        assert page.locator(f"label[for={input_id}]").count() == 1, f"#{input_id} has no label"
    page.click("#toggle-settings")  # the settings panel folds away and back
    assert page.is_hidden("#settings") and page.get_attribute("#toggle-settings", "aria-expanded") == "false"
    page.click("#toggle-settings")
    assert page.is_visible("#settings")


def test_api_key_in_settings_lists_the_model(chat):
    page = chat.page
    page.fill("#api-key", API_KEY)
    page.wait_for_function(f"document.querySelector('#model').value === '{MODEL}'")
    assert "context 256 tokens" in page.text_content("#model-status")
    assert MODEL in page.text_content("#model-badge")
    stored = json.loads(page.evaluate("localStorage.getItem('moestream.chat.settings')"))
    assert stored["api_key"] == API_KEY and stored["model"] == MODEL


def _stop_mid_stream(chat: Chat) -> tuple[int, int] | None:
    """Send, see the reply's text grow across two observations, press Stop. Returns the two lengths seen, or
    None when the whole reply arrived before Stop could be pressed."""
    page = chat.page
    chat.send("Hello")
    page.wait_for_function(f"({REPLY_LENGTH})() > 0", polling="raf")
    first = page.evaluate(REPLY_LENGTH)
    page.wait_for_function(f"({REPLY_LENGTH})() > {first} || ({REPLY_STATE})() !== 'streaming'", polling="raf")
    second = page.evaluate(REPLY_LENGTH)
    if page.evaluate(REPLY_STATE) != "streaming":
        chat.wait_idle()
        return None
    page.click("#stop")
    chat.wait_idle()
    return first, second


def test_reply_streams_and_stop_keeps_the_partial_text(chat):
    page = chat.page
    page.fill("#max-tokens", "200")  # far more than arrives before Stop
    for _ in range(3):
        seen = _stop_mid_stream(chat)
        if seen and page.get_attribute(LAST_REPLY, "data-state") == "stopped":
            break
        page.click("#new-chat")  # the reply beat the click: start over
    else:
        pytest.fail("the reply finished before Stop could be pressed, three times")
    first, second = seen
    assert 0 < first < second, "the text did not grow while streaming"
    stopped = chat.reply_text()
    assert len(stopped) >= second  # the partial reply is kept
    page.wait_for_timeout(400)
    assert chat.reply_text() == stopped, "the reply kept growing after Stop"
    assert "stopped" in page.text_content(f"{LAST_REPLY} >> .stats")
    # ready for the next message
    assert page.is_enabled("#send") and page.is_disabled("#stop")
    assert page.input_value("#prompt") == ""
    assert page.evaluate("document.activeElement.id") == "prompt"
    # and the server stopped too: nothing is left running for the aborted request
    generated = _metric(chat.server_url, "moestream_generated_tokens_total")
    time.sleep(0.3)
    assert _metric(chat.server_url, "moestream_generated_tokens_total") == generated
    assert _metric(chat.server_url, "moestream_running_sequences") == 0


def test_second_message_gets_a_complete_reply_with_stats(chat):
    page = chat.page
    page.fill("#max-tokens", "60")  # with the stopped turn in the history, well inside the 256-token context
    before = len(chat.chat_requests())
    chat.send("Tell me about the garden.")
    chat.wait_idle()
    reply = page.locator(LAST_REPLY)
    assert reply.get_attribute("data-state") == "done"
    assert chat.reply_text().strip()
    stats = reply.locator(".stats").text_content()
    assert re.search(r"\d+\.\d tokens/s", stats), stats
    assert re.search(r" \d+ tokens · first token \d+ ms", stats), stats
    assert re.search(r"expert cache hits \d+%", stats), stats  # the tiny model's experts go through the cache
    assert not reply.locator(".error").count()

    request = chat.chat_requests()[before]
    assert request.headers["authorization"] == f"Bearer {API_KEY}"
    body = json.loads(request.post_data)
    assert body["stream"] is True and body["stream_options"] == {"include_usage": True}
    assert body["model"] == MODEL and body["max_tokens"] == 60 and body["temperature"] == 0.8
    roles = [m["role"] for m in body["messages"]]
    assert roles == ["user", "assistant", "user"], roles  # the stopped reply is part of the conversation
    SCREENSHOT.parent.mkdir(exist_ok=True)
    page.screenshot(path=str(SCREENSHOT))
    assert SCREENSHOT.stat().st_size < 200_000


def test_bad_api_key_shows_the_401_in_the_conversation(chat):
    page = chat.page
    page.fill("#api-key", "wrong-key")
    chat.send("Hello again")
    chat.wait_idle()
    reply = page.locator(LAST_REPLY)
    assert reply.get_attribute("data-state") == "error"
    error = reply.locator(".error").text_content()
    assert "HTTP 401" in error and "Incorrect or missing API key" in error, error
    assert "left-out" in reply.get_attribute("class")  # and it is not sent with the next message
    page.fill("#api-key", API_KEY)
    page.wait_for_function("!document.querySelector('#model-status').classList.contains('bad')")


CANNED_STREAM = [  # what a reasoning model calling a tool would send, then a failure inside the 200 stream
    {"choices": [{"index": 0, "delta": {"role": "assistant", "content": ""}}]},
    {"choices": [{"index": 0, "delta": {"reasoning_content": "The user wants "}}]},
    {"choices": [{"index": 0, "delta": {"reasoning_content": "the weather."}}]},
    {"choices": [{"index": 0, "delta": {"content": "Let me check."}}]},
    {"choices": [{"index": 0, "delta": {"tool_calls": [
        {"index": 0, "id": "call_1", "type": "function", "function": {"name": "get_weather", "arguments": ""}}]}}]},
    {"choices": [{"index": 0, "delta": {"tool_calls": [{"index": 0, "function": {"arguments": "{\"city\": "}}]}}]},
    {"choices": [{"index": 0, "delta": {"tool_calls": [{"index": 0, "function": {"arguments": "\"Paris\"}"}}]}}]},
    {"error": {"message": "the engine failed: out of memory", "type": "server_error", "code": None}},
]


def _sse(chunks: list, done: bool) -> str:
    return "".join(f"data: {json.dumps(c)}\n\n" for c in chunks) + ("data: [DONE]\n\n" if done else "")


def test_thinking_tool_calls_and_stream_errors_are_shown(chat):
    """The tiny model neither thinks nor calls tools, so the stream is scripted in the browser (page.route) to see
    the page show what such a model sends, and an error that arrives after the 200."""
    page = chat.page
    page.route("**/v1/chat/completions", lambda route: route.fulfill(
        status=200, content_type="text/event-stream", body=_sse(CANNED_STREAM, done=True)))
    try:
        chat.send("Weather in Paris?")
        chat.wait_idle()
        reply = page.locator(LAST_REPLY)
        thinking = reply.locator("details.thinking")
        assert thinking.get_attribute("open") is None  # folded
        assert thinking.locator(".text").text_content() == "The user wants the weather."
        assert page.evaluate("[...document.querySelectorAll('.message.assistant')].pop().firstElementChild"
                             ".nextElementSibling.classList.contains('thinking')")  # above the reply
        call = reply.locator("details.tool-call")
        assert call.get_attribute("open") is None
        assert call.locator(".name").text_content() == "get_weather"
        assert call.locator(".arguments").text_content() == '{"city": "Paris"}'
        assert chat.reply_text() == "Let me check."
        error = reply.locator(".error").text_content()
        assert "error in the stream" in error and "out of memory" in error, error

        page.unroute("**/v1/chat/completions")
        page.route("**/v1/chat/completions", lambda route: route.fulfill(
            status=200, content_type="text/event-stream", body=_sse(CANNED_STREAM[:4], done=False)))
        chat.send("And now?")
        chat.wait_idle()
        assert "without data: [DONE]" in page.locator(LAST_REPLY).locator(".error").text_content()
    finally:
        page.unroute("**/v1/chat/completions")


def test_new_chat_starts_an_empty_conversation(chat):
    page = chat.page
    page.click("#new-chat")
    assert page.locator(".message").count() == 0
    page.fill("#max-tokens", "20")
    page.fill("#prompt", "Good morning,")
    page.press("#prompt", "Shift+Enter")  # a new line, not a send
    page.type("#prompt", "dear reader")
    assert page.locator(".message").count() == 0
    page.press("#prompt", "Enter")
    chat.wait_idle()
    assert page.get_attribute(LAST_REPLY, "data-state") == "done"
    assert page.text_content(".message.user .content") == "Good morning,\ndear reader"
    body = json.loads(chat.chat_requests()[-1].post_data)
    assert [m["content"] for m in body["messages"]] == ["Good morning,\ndear reader"]  # nothing from before


def test_settings_survive_a_reload_and_nothing_went_elsewhere(chat):
    page = chat.page
    page.fill("#system", "Answer briefly.")
    page.fill("#seed", "7")
    page.reload()
    page.wait_for_function(f"document.querySelector('#model').value === '{MODEL}'")
    assert page.input_value("#api-key") == API_KEY
    assert page.input_value("#max-tokens") == "20" and page.input_value("#seed") == "7"
    chat.send("Hi")
    chat.wait_idle()
    body = json.loads(chat.chat_requests()[-1].post_data)
    assert body["seed"] == 7 and body["messages"][0] == {"role": "system", "content": "Answer briefly."}
    assert not chat.page_errors, chat.page_errors
    assert not _unexpected_console_errors(chat), chat.console_errors
    assert not _foreign_requests(chat), _foreign_requests(chat)
