"""The terminal dashboard of `moestream top` (textual): one scrape of the server's /metrics every interval, shown
as panels. The numbers come from top_model.py (no textual there, so they are tested alone); this module only
fetches, keeps the previous scrape, and renders.

The fetch runs in a thread (`asyncio.to_thread`) with a short timeout, so a slow or dead server never freezes
the UI; polls never overlap (a lock, and textual's timer awaits each poll before the next tick). A failed
scrape keeps the last numbers on screen, says "disconnected: <reason>, retrying" and forgets the previous scrape,
so rates start again from the first scrape after the server is back. `q` quits.

`TopApp(fetch=...)` takes the function that GETs the page, so a test can see exactly the text the app got."""

from __future__ import annotations

import asyncio
import http.client
import time
from typing import Callable

from rich.text import Text
from textual.app import App, ComposeResult
from textual.containers import Horizontal
from textual.widgets import Footer, Static

from .top_model import Snapshot, View, derive, failure_reason, fetch, parse
from .units import fmt_bytes

RAMP = "▁▂▃▄▅▆▇█"  # layer strip glyphs, hit rate 0 .. 1
NO_LOOKUPS = "·"
STRIP_COLUMNS = 64
SCRAPE_ERRORS = (OSError, ValueError, http.client.HTTPException)


class TopApp(App):
    TITLE = "moestream top"
    BINDINGS = [("q", "quit", "quit")]
    CSS = """
    #status { height: 1; padding: 0 1; background: $success-darken-2; }
    #status.down { background: $error; }
    .panel { border: round $primary; padding: 0 1; height: auto; }
    #row { height: auto; }
    #row > .panel { width: 1fr; }
    .stale { color: $text-disabled; }
    """

    def __init__(self, url: str, interval: float = 1.0, fetch: Callable[[str], str] = fetch):
        super().__init__()
        self.url, self.interval, self.fetch = url, interval, fetch
        self.before: Snapshot | None = None  # the previous good scrape of this server run
        self.view: View | None = None  # what is on screen
        self.error: str | None = None  # why the last scrape failed; None when it worked
        self.scrapes = 0  # polls finished, good or not (tests wait on it)
        self._lock = asyncio.Lock()

    def compose(self) -> ComposeResult:
        yield Static(Text(f"connecting to {self.url} ..."), id="status")
        with Horizontal(id="row"):
            yield Static(id="requests", classes="panel")
            yield Static(id="cache", classes="panel")
        for name in ("latency", "layers", "memory"):
            yield Static(id=name, classes="panel")
        yield Footer()

    def on_mount(self) -> None:
        for name, title in (("requests", "requests"), ("cache", "expert cache"), ("latency", "latency"),
                            ("layers", "layer hit rate"), ("memory", "memory")):
            self.query_one(f"#{name}").border_title = title
        self.run_worker(self.poll(), group="poll")
        self.set_interval(self.interval, self.poll)

    async def poll(self) -> None:
        """One scrape and refresh; the fetch and parse run off the UI thread."""
        async with self._lock:
            try:
                now = await asyncio.to_thread(self._scrape)
            except SCRAPE_ERRORS as exc:
                self._disconnected(failure_reason(exc))
            else:
                self._show(derive(self.before, now))
                self.before = now
            self.scrapes += 1

    def _scrape(self) -> Snapshot:
        text = self.fetch(self.url)
        return parse(text, time.monotonic())

    def _disconnected(self, reason: str) -> None:
        self.error, self.before = reason, None  # a rate must not span the gap: the server may restart in it
        status = self.query_one("#status", Static)
        status.update(Text(f"disconnected: {reason}, retrying every {self.interval:g} s ({self.url})"))
        status.add_class("down")
        self.query(".panel").add_class("stale")  # the last numbers stay, greyed: they are not live

    def _show(self, view: View) -> None:
        self.error, self.view = None, view
        status = self.query_one("#status", Static)
        status.remove_class("down")
        self.query(".panel").remove_class("stale")
        status.update(Text(status_text(view, self.url, self.interval)))  # Text: a URL or reason is not markup
        for name, render in (("requests", requests_text), ("cache", cache_text), ("latency", latency_text),
                             ("layers", layers_text), ("memory", memory_text)):
            shown = render(view)
            self.query_one(f"#{name}", Static).update(Text(shown) if isinstance(shown, str) else shown)


# -- rendering (pure: View -> text) -----------------------------------------------------------------------------

def pct(rate: float | None) -> str:
    return "-" if rate is None else f"{100 * rate:.1f} %"


def ms(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    return f"{seconds * 1e3:.2f} ms" if seconds < 0.01 else f"{seconds * 1e3:.1f} ms"


def size(n: float | None) -> str:
    return "-" if n is None else fmt_bytes(n)


def status_text(view: View, url: str, interval: float) -> str:
    note = " · server restarted: rates start again" if view.restarted else ""
    return f"connected to {url} · every {interval:g} s{note}"


def requests_text(view: View) -> str:
    s = view.now
    return f"tokens/s  {s.tokens_per_second:.1f}\nrunning   {s.running:.0f}\nqueued    {s.queued:.0f}"


def cache_text(view: View) -> str:
    interval = f"{pct(view.hit_rate_interval)} last {view.seconds:.1f} s" if view.seconds else "- last interval"
    read = "-" if view.bytes_read_per_s is None else f"{fmt_bytes(view.bytes_read_per_s)}/s"
    return (f"hit rate  {interval}\n          {pct(view.hit_rate)} since start\n"
            f"read      {read}\nlookups   {view.now.lookups:.0f}")


def latency_text(view: View) -> str:
    rows = [f"{'':6}{'p50':>10}{'p95':>10}{'p99':>10}"]
    for name, p in (("step", view.step_latency), ("read", view.read_latency)):
        rows.append(f"{name:6}{ms(p.p50):>10}{ms(p.p95):>10}{ms(p.p99):>10}  ({p.over})")
    return "\n".join(rows)


def glyph(rate: float | None) -> tuple[str, str]:
    """(character, style) of one layer's cell: height and colour by hit rate."""
    if rate is None:
        return NO_LOOKUPS, "dim"
    colour = "green" if rate >= 0.9 else "yellow" if rate >= 0.5 else "red"
    return RAMP[min(int(rate * len(RAMP)), len(RAMP) - 1)], colour


def cell_width(n_layers: int) -> int:
    """Characters per layer in the strip: up to 4 for a few layers, 1 from 64 layers on (one line of 80 columns)."""
    return max(1, min(4, STRIP_COLUMNS // max(1, n_layers)))


def layers_text(view: View) -> Text:
    """The strip (one cell per layer, in layer order); under it each layer's percentage when cells are 4 wide;
    then what it covers and its weakest layer."""
    rates = view.layer_hit_rates
    if not rates:
        return Text("no expert layers (a model still loading, or a dense one)")
    strip, width = Text(), cell_width(len(rates))
    for _, rate in rates:
        char, style = glyph(rate)
        strip.append(char * width, style)
    if width >= 4:
        strip.append("\n" + "".join(" -- " if r is None else f"{100 * r:>3.0f}%" for _, r in rates))
    seen = [(rate, layer) for layer, rate in rates if rate is not None]
    worst = f" · lowest: layer {min(seen)[1]}, {pct(min(seen)[0])}" if seen else ""
    strip.append(f"\nlayers {rates[0][0]}-{rates[-1][0]} ({len(rates)}), {view.layers_over}{worst}"
                 f" · {RAMP[0]} 0 % .. {RAMP[-1]} 100 %")
    return strip


def memory_text(view: View) -> str:
    s = view.now
    return (f"RSS {size(s.rss)} · expert cache {size(s.cache_bytes)} of {size(s.cache_budget)} budget"
            f" · available {size(s.available)}")

