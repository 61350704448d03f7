"""`moestream top` against a real `moestream serve` under load, driven headless through textual's pilot: the panels
show the numbers of the very scrape the app got (the test sees that text through the app's fetch, and derives
the expected numbers from it with prometheus_client's parser alone); a stopped server shows as disconnected
without ending the app, and the same port serving again brings the numbers back. The number-making (percentiles
from buckets, a restart's counters going backwards) is unit-tested on hand-written expositions."""

from __future__ import annotations

import asyncio
import threading
import time
import urllib.parse

import pytest
from openai import OpenAI
from prometheus_client.parser import text_string_to_metric_families

from moestream.cli.main import main
from moestream.cli.top_app import TopApp, cell_width, glyph, ms
from moestream.cli.top_model import (INTERVAL, NO_DATA, SINCE_START, Buckets, derive, failure_reason, fetch,
                                     metrics_url, parse, percentile)
from moestream.cli.units import fmt_bytes
from tests.server.conftest import start_server
from tests.server.test_api import MODEL, PROMPTS

FLAGS = ("--ram-budget", "2MiB", "--max-batch", "2")  # 10 of 32 experts fit: real misses; 4 clients: 2 queue


class Live:
    """The module's server; the restart test replaces it with one on the same port."""

    def __init__(self):
        self.server = start_server(*FLAGS)

    @property
    def port(self) -> int:
        return urllib.parse.urlsplit(self.server.url).port


@pytest.fixture(scope="module")
def live():
    holder = Live()
    yield holder
    holder.server.stop()


@pytest.fixture
def load(live):
    """Four clients streaming completions back to back until the test ends."""
    stop = threading.Event()
    client = OpenAI(base_url=live.server.base_url, api_key="x", max_retries=0, timeout=30)

    def stream(prompt: str) -> None:
        while not stop.is_set():
            for _ in client.completions.create(model=MODEL, prompt=prompt, max_tokens=150, stream=True):
                if stop.is_set():
                    break

    threads = [threading.Thread(target=stream, args=(p,), daemon=True) for p in PROMPTS[:4]]
    for t in threads:
        t.start()
    yield
    stop.set()
    for t in threads:
        t.join(timeout=30)


def drive(app: TopApp, body) -> None:
    """Run `app` headless and `await body(pilot)` inside it."""
    async def go():
        async with app.run_test(size=(110, 30)) as pilot:
            await body(pilot)
    asyncio.run(go())


async def until(pilot, done, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while not done():
        assert time.monotonic() < deadline, "timed out waiting for the dashboard"
        await pilot.pause(0.05)


def text(app: TopApp, widget: str) -> str:
    """A panel's plain text (render() is its Content, or its rich Text/str on textual before 2.0)."""
    return str(app.query_one(f"#{widget}").render())


def flat(page: str) -> dict[tuple[str, str], float]:
    """(sample name, its layer/le label or "") -> value, with prometheus_client's parser only."""
    return {(s.name, s.labels.get("layer", s.labels.get("le", ""))): s.value
            for family in text_string_to_metric_families(page) for s in family.samples}


# -- against a live server ----------------------------------------------------------------------------------------

def test_the_panels_show_the_numbers_of_the_scrape_they_came_from(live, load):
    pages: list[str] = []  # exactly what the app fetched, in order

    def spy(url: str) -> str:
        pages.append(fetch(url))
        return pages[-1]

    app = TopApp(metrics_url(live.server.url), interval=3600, fetch=spy)  # the test polls, the timer never does

    async def body(pilot):
        await until(pilot, lambda: app.scrapes >= 1)
        while True:  # two scrapes 0.4 s apart, the load running and the cache looked up between them
            await asyncio.sleep(0.4)
            await app.poll()
            await pilot.pause()
            before, now = flat(pages[-2]), flat(pages[-1])
            looked_up = now[("moestream_cache_lookups_total", "")] - before[("moestream_cache_lookups_total", "")]
            if now[("moestream_running_sequences", "")] > 0 and looked_up > 0:
                break
        check_panels(app, before, now)

    drive(app, body)


def check_panels(app: TopApp, before: dict, now: dict) -> None:
    """`before`, `now`: the app's last two pages, as flat() reads them."""
    requests = text(app, "requests")
    assert f"tokens/s  {now[('moestream_tokens_per_second', '')]:.1f}" in requests
    assert f"running   {now[('moestream_running_sequences', '')]:.0f}" in requests
    assert f"queued    {now[('moestream_queue_depth', '')]:.0f}" in requests
    check_cache(app, before, now)
    check_layers(app, before, now)
    step = Buckets(*zip(*sorted((float(le), now[(name, le)] - before[(name, le)]) for name, le in now
                                if name == "moestream_step_latency_seconds_bucket")))
    row = next(line for line in text(app, "latency").splitlines() if line.startswith("step"))
    assert row.split()[1:3] == ms(percentile(step, 0.5)).split() and row.endswith(f"({INTERVAL})")
    memory = text(app, "memory")
    assert f"RSS {fmt_bytes(now[('moestream_process_resident_bytes', '')])}" in memory
    used, budget = now[("moestream_cache_bytes", "")], now[("moestream_cache_budget_bytes", "")]
    assert budget == 2 << 20 and 0 < used <= budget
    assert f"expert cache {fmt_bytes(used)} of {fmt_bytes(budget)} budget" in memory


def delta(before: dict, now: dict, name: str, label: str = "") -> float:
    return now[(name, label)] - before[(name, label)]


def check_cache(app: TopApp, before: dict, now: dict) -> None:
    lookups, hits = now[("moestream_cache_lookups_total", "")], now[("moestream_cache_hits_total", "")]
    d_lookups = delta(before, now, "moestream_cache_lookups_total")
    d_hits = delta(before, now, "moestream_cache_hits_total")
    cache = text(app, "cache")
    assert f"{100 * hits / lookups:.1f} % since start" in cache
    assert f"{100 * d_hits / d_lookups:.1f} % last {app.view.seconds:.1f} s" in cache
    d_bytes = delta(before, now, "moestream_cache_bytes_read_total")
    assert f"read      {fmt_bytes(d_bytes / app.view.seconds)}/s" in cache


def check_layers(app: TopApp, before: dict, now: dict) -> None:
    layers = sorted(str(layer) for name, layer in now if name == "moestream_cache_layer_lookups_total")
    assert layers == ["0", "1", "2", "3"]  # the embedded model's four layers, each a cell of the strip
    assert sum(now[("moestream_cache_layer_lookups_total", i)] for i in layers) == \
        now[("moestream_cache_lookups_total", "")]
    rates = []
    for i in layers:
        n = delta(before, now, "moestream_cache_layer_lookups_total", i)
        rates.append(delta(before, now, "moestream_cache_layer_hits_total", i) / n if n else None)
    strip, percents, legend = text(app, "layers").split("\n")
    assert strip == "".join(glyph(r)[0] * cell_width(4) for r in rates) and "layers 0-3 (4), last interval" in legend
    assert percents == "".join(" -- " if r is None else f"{100 * r:>3.0f}%" for r in rates)


def test_a_stopped_server_shows_disconnected_and_the_same_port_brings_it_back(live):
    app = TopApp(metrics_url(live.server.url), interval=0.2)

    async def body(pilot):
        await until(pilot, lambda: app.view is not None)
        port = live.port
        live.server.stop()
        await until(pilot, lambda: app.error is not None)
        status = text(app, "status")
        assert status.startswith(f"disconnected: {app.error}, retrying") and app.is_running
        seen = app.scrapes
        await until(pilot, lambda: app.scrapes >= seen + 2)  # it keeps polling a dead server
        live.server = start_server(*FLAGS, "--port", str(port))  # the last --port wins over start_server's 0
        await until(pilot, lambda: app.error is None)
        assert text(app, "status").startswith("connected to") and "- last interval" in text(app, "cache")
        await until(pilot, lambda: app.view.seconds is not None)  # the next scrape has rates again
        assert "lookups" in text(app, "cache") and text(app, "layers").count("\n") == 2

    drive(app, body)


def test_q_quits():
    app = TopApp(metrics_url("http://[::1]:9"), interval=0.2)  # nothing listens: disconnected, still quits

    async def body(pilot):
        await until(pilot, lambda: app.scrapes >= 1)
        assert text(app, "status").startswith("disconnected: ") and "http://[::1]:9/metrics" in text(app, "status")
        await pilot.press("q")
        await until(pilot, lambda: not app.is_running)

    drive(app, body)


# -- the numbers alone ------------------------------------------------------------------------------------------

def page(lookups=0, hits=0, bytes_read=0, generated=0, step=(0, 0, 0), layers=((0, 0), (0, 0))) -> str:
    """A hand-written /metrics page: step latency buckets at 1 ms, 10 ms, +Inf (cumulative)."""
    lines = ["# TYPE moestream_cache_lookups counter", f"moestream_cache_lookups_total {lookups}",
             "# TYPE moestream_cache_hits counter", f"moestream_cache_hits_total {hits}",
             "# TYPE moestream_cache_bytes_read counter", f"moestream_cache_bytes_read_total {bytes_read}",
             "# TYPE moestream_generated_tokens counter", f"moestream_generated_tokens_total {generated}",
             "# TYPE moestream_cache_layer_lookups counter",
             *(f'moestream_cache_layer_lookups_total{{layer="{i}"}} {n}' for i, (n, _) in enumerate(layers)),
             "# TYPE moestream_cache_layer_hits counter",
             *(f'moestream_cache_layer_hits_total{{layer="{i}"}} {h}' for i, (_, h) in enumerate(layers)),
             "# TYPE moestream_step_latency_seconds histogram",
             *(f'moestream_step_latency_seconds_bucket{{le="{le}"}} {c}' for le, c in zip(("0.001", "0.01", "+Inf"),
                                                                                         step)),
             f"moestream_step_latency_seconds_count {step[-1]}", "moestream_step_latency_seconds_sum 0"]
    return "\n".join(lines) + "\n"


@pytest.mark.parametrize("counts, q, expected", [
    ((4, 4, 4), 0.5, 0.0005),  # inside the first bucket: from 0 to its bound
    ((0, 10, 10), 0.5, 0.0055),  # halfway through the 1-10 ms bucket
    ((0, 10, 10), 0.99, 0.00991),
    ((0, 10, 20), 0.99, 0.01),  # in +Inf: the last finite bound, as histogram_quantile says
    ((0, 0, 0), 0.5, None),
])
def test_percentile_from_buckets(counts, q, expected):
    got = percentile(Buckets((0.001, 0.01, float("inf")), counts), q)
    assert got == pytest.approx(expected) if expected is not None else got is None


def test_rates_over_an_interval():
    a = parse(page(100, 50, 1000, 10, (1, 2, 2), ((60, 30), (40, 20))), at=10.0)
    b = parse(page(200, 130, 3000, 30, (1, 12, 12), ((100, 70), (100, 60))), at=12.0)
    view = derive(a, b)
    assert (view.seconds, view.restarted, view.hit_rate, view.hit_rate_interval) == (2.0, False, 0.65, 0.8)
    assert view.bytes_read_per_s == 1000.0
    assert view.layer_hit_rates == ((0, 1.0), (1, pytest.approx(2 / 3))) and view.layers_over == INTERVAL
    assert view.step_latency.over == INTERVAL and view.step_latency.p50 == pytest.approx(0.0055)
    assert view.read_latency.over == NO_DATA and view.read_latency.p50 is None  # not on this page


def test_a_counter_going_backwards_is_a_restart_not_a_negative_rate():
    old = parse(page(5000, 4000, 10**6, 900, (10, 20, 20), ((2500, 2000), (2500, 2000))), at=10.0)
    new = parse(page(40, 10, 5000, 4, (1, 2, 2), ((20, 5), (20, 5))), at=11.0)  # a new server run
    view = derive(old, new)
    assert view.restarted and view.seconds is None
    assert view.hit_rate_interval is None and view.bytes_read_per_s is None  # no rate, rather than a negative one
    assert view.hit_rate == 0.25 and view.layers_over == SINCE_START
    assert view.step_latency.over == SINCE_START and view.step_latency.p50 == pytest.approx(0.001)
    assert not derive(new, parse(page(41, 11, 5000, 5, (1, 2, 2), ((21, 6), (20, 5))), at=12.0)).restarted
    assert derive(new, parse(page(41, 11, 5000, 5, (1, 2, 2), ((21, 6),)), at=12.0)).restarted  # other layers
    loading = parse(page(layers=()), at=9.0)  # a server still loading its model reports no layers yet
    assert not derive(loading, old).restarted


def test_a_page_that_is_not_moestream_is_refused():
    with pytest.raises(ValueError, match="no moestream metrics"):
        parse("# TYPE up gauge\nup 1\n", at=0.0)


@pytest.mark.parametrize("given, url", [
    ("http://127.0.0.1:8000", "http://127.0.0.1:8000/metrics"),
    ("https://h:1/v1/", "https://h:1/metrics"),
    ("http://h/prefix/metrics", "http://h/prefix/metrics"),
])
def test_the_url_names_the_server(given, url):
    assert metrics_url(given) == url


@pytest.mark.parametrize("argv, says", [
    (["--url", "ftp://127.0.0.1:8000"], "--url 'ftp://127.0.0.1:8000' is not an http:// or https:// address"),
    (["--url", "127.0.0.1:8000"], "is not an http:// or https:// address"),
    (["--interval", "0"], "--interval must be"),
])
def test_bad_flags_are_one_line_errors(argv, says, capsys):
    assert main(["top", *argv]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("moestream: error: ") and says in err


def test_a_refused_connection_reads_as_one():
    with pytest.raises(OSError) as caught:
        fetch("http://127.0.0.1:9/metrics", timeout=2)
    assert failure_reason(caught.value) == "connection refused"
