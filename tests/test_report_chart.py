"""A chart that does not lie (issue 23, item 4): periods drawn by state (a time when the site
was only down, or only inconclusive, is not "accessible"), the current state since when it
began, shares with their denominators, a CSV with every section, and a chart that fits a
phone: checked in a real headless Chromium at three widths, driven through the DevTools
protocol over a pipe (the page itself runs no script).

The measurements are stored row by row as a volunteer's database holds them (no network).
"""

from __future__ import annotations

import base64
import csv
import fcntl
import io
import json
import os
import selectors
import signal
import struct
import subprocess
import time
import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

from click.testing import CliRunner

from probe.cli import cli
from probe.report import build_report
from probe.report.html_page import write_html
from probe.report.timeline import MAX_PERIODS, Options, epoch, timeline
from tests.conftest import require_tool
from tests.test_report import AS_NAMES, CHROMIUM_FLAGS, FORMULA, Writer, day, report, story
from tests.test_timeline import m


def states(path: Path) -> Path:
    """One URL per story: blocked, then down only, then accessible; inconclusive only between
    accessible measurements; a current state that began before its latest measurement."""
    w = Writer(path)
    # a.kg on AS1: blocked (an event), the site down on days 3-4, accessible on days 5-6.
    for n in (1, 2):
        w.add(day(n), "a.kg", "AS1", "blocked", "dns")
    for n in (3, 4):
        w.add(day(n), "a.kg", "AS1", "down")
    for n in (5, 6):
        w.add(day(n), "a.kg", "AS1", "accessible")
    # b.kg on AS1: accessible, inconclusive only on days 2-3, accessible again.
    w.add(day(1), "b.kg", "AS1", "accessible")
    for n in (2, 3):
        w.add(day(n), "b.kg", "AS1", "inconclusive", status="offline", offline=1)
    w.add(day(4), "b.kg", "AS1", "accessible")
    # c.kg on AS2: accessible, then blocked from day 3 on, through a down and an
    # inconclusive measurement (the state began on day 3, not at the latest measurement).
    w.add(day(1), "c.kg", "AS2", "accessible")
    w.add(day(3), "c.kg", "AS2", "blocked", "tls")
    w.add(day(4), "c.kg", "AS2", "down")
    w.add(day(5), "c.kg", "AS2", "blocked", "tls")
    w.add(day(6), "c.kg", "AS2", "inconclusive", failure=FORMULA)
    w.add(day(7), "c.kg", "AS2", "blocked", "tls")
    return path


class Chart(HTMLParser):
    """Per row, the shapes drawn (class and fill, in order), the legend entries and the
    fill of each pattern's ground."""

    def __init__(self) -> None:
        super().__init__()
        self.rows: dict[str, list[dict[str, str]]] = {}
        self.row: str | None = None
        self.legend: dict[str, str] = {}
        self.item: str | None = None
        self.svg_attrs: dict[str, str | None] | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = dict(attrs)
        classes = (a.get("class") or "").split()
        if tag == "svg" and "timeline" in classes:
            self.svg_attrs = a
        if tag == "g" and "row" in classes:
            self.row = a.get("data-domain") or ""
            self.rows[self.row] = []
        elif self.row is not None and tag in ("rect", "path") and "nodata" not in classes:
            self.rows[self.row].append({k: v or "" for k, v in a.items()})
        if tag == "li" and a.get("data-legend"):
            self.item = a["data-legend"]
            self.legend[self.item] = ""

    def handle_endtag(self, tag: str) -> None:
        if tag == "g":
            self.row = None
        if tag == "li":
            self.item = None

    def handle_data(self, data: str) -> None:
        if self.item is not None:
            self.legend[self.item] += data


def html(db: Path, path: Path | None = None) -> str:
    text = report(db, "html")
    if path is not None:
        path.write_text(text)
    return text


def chart(db: Path) -> Chart:
    parsed = Chart()
    parsed.feed(html(db))
    return parsed


# ------------------------------------------------------------------ periods and their styles


def test_down_only_and_inconclusive_only_periods_have_their_own_class_and_fill(tmp_path):
    c = chart(states(tmp_path / "p.db"))
    fills = {}
    for shapes in c.rows.values():
        for shape in shapes:
            if "period" in shape["class"].split():
                fills.setdefault(shape["data-state"], set()).add(shape["fill"])
                assert shape["data-state"] in shape["class"].split()
    assert set(fills) == {"accessible", "down", "inconclusive"}
    assert all(len(f) == 1 for f in fills.values()), fills
    assert len({f for fs in fills.values() for f in fs}) == 3  # three different fills
    # b.kg: accessible, inconclusive only, accessible: never one "not blocked" stretch.
    b = [(s["data-state"], s["data-start"]) for s in c.rows["b.kg"] if "period" in s["class"]]
    # Drawn accessible first: a short inconclusive period is never hidden under one.
    assert [state for state, _ in b] == ["accessible", "accessible", "inconclusive"]
    assert sorted(b, key=lambda p: p[1]) == [
        ("accessible", "2026-10-21T08:00:00Z"),
        ("inconclusive", "2026-10-22T08:00:00Z"),
        ("accessible", "2026-10-24T08:00:00Z"),
    ]
    # Every style drawn is in the legend, with words, and the legend has nothing drawn
    # nowhere (but the methods: the key to every colour).
    assert {"accessible", "down", "inconclusive", "unknown", "ending", "anomaly"} <= set(c.legend)
    assert "mixed" not in c.legend
    assert c.legend["down"].startswith("down only") and c.legend["inconclusive"] == (
        "inconclusive only"
    )
    assert {k for k in c.legend if k.startswith("blocked-")} == {
        "blocked-dns",
        "blocked-tcp_ip",
        "blocked-tls",
        "blocked-http-failure",
        "blocked-http-diff",
    }


def test_blocked_then_down_only_then_accessible_is_three_styled_periods(tmp_path):
    c = chart(states(tmp_path / "p.db"))
    shapes = c.rows["a.kg"]
    drawn = [
        (s["class"].split()[0], s.get("data-blocking") or s.get("data-state"), s["data-start"])
        for s in shapes
        if s["class"].split()[0] in ("bar", "period")
    ]
    # The periods first (drawn below), the block over them.
    assert drawn == [
        ("period", "accessible", "2026-10-25T08:00:00Z"),
        ("period", "down", "2026-10-23T08:00:00Z"),
        ("bar", "dns", "2026-10-21T08:00:00Z"),
    ]
    down = next(s for s in shapes if s.get("data-state") == "down")
    # The site was down until the first accessible measurement: not "accessible" before it.
    assert down["data-end"] == "2026-10-25T08:00:00Z"
    bar = next(s for s in shapes if "bar" in s["class"].split())
    assert float(bar["x"]) + float(bar["width"]) <= float(down["x"]) + 0.1
    # Nothing in the row is drawn with the accessible fill before day 5.
    accessible = next(s for s in shapes if s.get("data-state") == "accessible")
    assert float(accessible["x"]) >= float(down["x"]) + float(down["width"]) - 0.1


def test_periods_stay_bounded_and_merged_ones_say_so():
    rows = [m(h, "accessible" if h % 2 else "down") for h in range(4 * MAX_PERIODS)]
    rows.append(m(4 * MAX_PERIODS + 0.5, "blocked", "dns"))
    (net,) = timeline(rows).networks
    assert len(net.periods) <= MAX_PERIODS + MAX_PERIODS // 2
    assert net.periods[-1][2] == "blocked"  # the current state stays whole
    assert {state for _, _, state in net.periods} <= {"accessible", "down", "mixed"} | {"blocked"}
    assert any(state == "mixed" for _, _, state in net.periods)
    # In time order, without overlaps, first and last measurements kept.
    assert net.periods[0][0] == rows[0].time and net.periods[-1][1] == rows[-1].time
    for (_, end, _), (start, _, _) in zip(net.periods, net.periods[1:], strict=False):
        assert end < start


def test_a_long_time_without_measurement_splits_a_period():
    rows = [m(0, "accessible"), m(1, "accessible"), m(40, "accessible")]
    (net,) = timeline(rows, Options(max_gap=24 * 3600)).networks
    t0 = epoch("2026-10-26 08:00:00")
    assert net.periods == [(t0, t0 + 3600, "accessible"), (t0 + 40 * 3600,) * 2 + ("accessible",)]


# ------------------------------------------------------------------ state, shares, CSV


def test_current_since_is_when_the_current_state_began(tmp_path):
    data = json.loads(report(states(tmp_path / "p.db"), "json"))
    nets = {n["domain"]: n for n in data["networks"]}
    c = nets["c.kg"]
    assert (c["current"], c["current_blocking"]) == ("blocked", "tls")
    assert c["current_since"] == "2026-10-23T08:00:00Z"  # day 3, not the latest (day 7)
    assert c["current_last_measured"] == "2026-10-27T08:00:00Z"
    assert nets["a.kg"]["current_since"] == "2026-10-25T08:00:00Z"  # the first accessible
    assert nets["b.kg"]["current_since"] == "2026-10-21T08:00:00Z"  # inconclusive: no end
    # The periods are in the JSON too.
    assert [p[2] for p in nets["a.kg"]["periods"]] == ["blocked", "down", "accessible"]


def test_shares_name_their_denominators(tmp_path):
    db = states(tmp_path / "p.db")
    data = json.loads(report(db, "json"))
    c = next(n for n in data["networks"] if n["domain"] == "c.kg")
    assert c["verdicts"] == {"accessible": 1, "blocked": 3, "down": 1, "inconclusive": 1}
    assert (c["blocked"], c["conclusive"], c["inconclusive"], c["down"]) == (3, 4, 1, 1)
    assert c["blocked_share"] == 0.75
    words = "75%: 3 of 4 conclusive measurements blocked; 1 inconclusive, 1 down"
    assert words in report(db, "md")
    assert words in html(db)
    a = "50%: 2 of 4 conclusive measurements blocked; 0 inconclusive, 2 down"
    assert a in report(db, "md")
    # With nothing conclusive, no percentage at all (0% would claim "not blocked").
    w = Writer(tmp_path / "q.db")
    w.add(day(1), "d.kg", "AS1", "down")
    w.add(day(2), "d.kg", "AS1", "inconclusive")
    md = report(w.path, "md")
    assert "| no conclusive measurement; 1 inconclusive, 1 down |" in md
    assert "0%" not in md


def test_csv_has_a_summary_per_url_and_network_then_events_and_anomalies(tmp_path):
    text = report(story(tmp_path / "p.db"), "csv")
    header, *rest = list(csv.reader(io.StringIO(text)))
    assert header[0] == "section"
    assert {"blocked", "conclusive", "inconclusive", "down", "current_since"} <= set(header)
    assert all(len(row) == len(header) for row in rest)
    rows = list(csv.DictReader(io.StringIO(text)))
    sections = [r["section"] for r in rows]
    assert sections == ["summary"] * 6 + ["event"] * 4 + ["anomaly"]
    summary = {(r["input"], r["asn"]): r for r in rows if r["section"] == "summary"}
    first = summary[("https://24.kg/", "AS1")]
    assert (first["blocked"], first["conclusive"], first["measurements"]) == ("3", "5", "5")
    assert first["current_since"] == "2026-10-27T08:00:00Z" and first["methods"] == "dns=3"
    assert summary[("https://24.kg/", "AS2")]["network_name"] == "'" + AS_NAMES["AS2"]
    (anomaly,) = (r for r in rows if r["section"] == "anomaly")
    assert (anomaly["domain"], anomaly["blocking"]) == ("kloop.kg", "tls")
    for row in rows:  # no cell a spreadsheet would run
        for value in row.values():
            assert value.lstrip(" ")[:1] not in ("=", "+", "-", "@"), row


def test_the_svg_scales_to_its_container(tmp_path):
    c = chart(states(tmp_path / "p.db"))
    assert c.svg_attrs is not None
    assert (c.svg_attrs.get("viewbox") or "").startswith("0 0 ")  # the parser lowers names
    assert "width" not in c.svg_attrs and "height" not in c.svg_attrs


def test_merged_periods_are_drawn_and_named_in_the_legend():
    rows = [m(h, "accessible" if h % 2 else "down") for h in range(4 * MAX_PERIODS)]
    report_ = build_report(rows, lambda ids: {}, generated_at="2026-12-01T00:00:00Z")
    out = io.StringIO()
    write_html(report_, out)
    c = Chart()
    c.feed(out.getvalue())
    (shapes,) = c.rows.values()
    drawn = {s["data-state"] for s in shapes if "period" in s["class"].split()}
    assert drawn == {"accessible", "down", "mixed"}
    assert c.legend["mixed"].startswith("several states")


# ------------------------------------------------------------------ in a real browser


class DevTools:
    """Chromium's DevTools protocol over --remote-debugging-pipe (fd 3 in, fd 4 out): JSON
    messages ended by NUL. No dependency, no port, and the browser has no network at all."""

    def __init__(self, process: subprocess.Popen[bytes], send: int, receive: int) -> None:
        self.process = process
        self.send = send
        self.receive = receive
        self.buffer = b""
        self.next_id = 0
        self.selector = selectors.DefaultSelector()
        self.selector.register(receive, selectors.EVENT_READ)
        self.session: str | None = None

    def _message(self, deadline: float) -> dict[str, Any]:
        while b"\0" not in self.buffer:
            # A deadline against a browser that hangs, not a synchronisation: every wait
            # ends at the browser's own message.
            left = deadline - time.monotonic()
            assert left > 0 and self.selector.select(left), "Chromium stopped answering"
            chunk = os.read(self.receive, 1 << 20)
            assert chunk, "Chromium closed the DevTools pipe"
            self.buffer += chunk
        raw, self.buffer = self.buffer.split(b"\0", 1)
        message: dict[str, Any] = json.loads(raw)
        return message

    def call(self, method: str, timeout: float = 60, **params: Any) -> dict[str, Any]:
        self.next_id += 1
        message: dict[str, Any] = {"id": self.next_id, "method": method, "params": params}
        if self.session is not None:
            message["sessionId"] = self.session
        os.write(self.send, json.dumps(message).encode() + b"\0")
        deadline = time.monotonic() + timeout
        while True:
            answer = self._message(deadline)
            if answer.get("id") == self.next_id:
                assert "error" not in answer, (method, answer["error"])
                result: dict[str, Any] = answer["result"]
                return result

    def wait_for(self, event: str, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while self._message(deadline).get("method") != event:
            pass


@contextmanager
def devtools(tmp_path: Path) -> Iterator[DevTools]:
    binary = require_tool("chromium", "the HTML report test needs it: apt-get install -y chromium")
    chromium_reads, to_chromium = os.pipe()
    from_chromium, chromium_writes = os.pipe()
    # Chromium's ends above 9 (and close-on-exec), so that moving them to 3 and 4 in the
    # child cannot overwrite one with the other.
    high = [fcntl.fcntl(fd, fcntl.F_DUPFD_CLOEXEC, 10) for fd in (chromium_reads, chromium_writes)]
    for fd in (chromium_reads, chromium_writes):
        os.close(fd)

    def pipes_at_3_and_4() -> None:  # where --remote-debugging-pipe looks for them
        os.dup2(high[0], 3)  # dup2 clears close-on-exec: only these two are inherited
        os.dup2(high[1], 4)

    argv = [
        "unshare",
        "-n",
        binary,
        *CHROMIUM_FLAGS,
        "--remote-debugging-pipe",
        f"--user-data-dir={tmp_path / 'profile-devtools'}",
        "about:blank",
    ]
    process = subprocess.Popen(
        argv,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        close_fds=False,  # every other descriptor is close-on-exec (Python's default)
        preexec_fn=pipes_at_3_and_4,
        start_new_session=True,
    )
    for fd in high:
        os.close(fd)
    tools = DevTools(process, to_chromium, from_chromium)
    try:
        (page,) = [t for t in tools.call("Target.getTargets")["targetInfos"] if t["type"] == "page"]
        attached = tools.call("Target.attachToTarget", targetId=page["targetId"], flatten=True)
        tools.session = attached["sessionId"]
        tools.call("Page.enable")
        yield tools
    finally:
        try:
            os.killpg(process.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        process.wait()
        tools.selector.close()
        os.close(to_chromium)
        os.close(from_chromium)


#: What the page's layout is at one width: the document's scroll width, the chart's box and
#: every legend entry's box (the page has no script of its own; the protocol asks).
MEASURE = """JSON.stringify({
  inner: innerWidth,
  scroll: document.scrollingElement.scrollWidth,
  chart: document.querySelector('svg.timeline').getBoundingClientRect().toJSON(),
  legend: [...document.querySelectorAll('ul.legend li')].map(li => ({
    key: li.dataset.legend, text: li.textContent,
    box: li.getBoundingClientRect().toJSON(),
  })),
})"""


def png_facts(png: bytes) -> tuple[int, int, int]:
    """(width, height, distinct byte values of the image data): a blank shot has few."""
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    width, height = struct.unpack(">II", png[16:24])
    data, at = b"", 8
    while at < len(png):
        (length,) = struct.unpack(">I", png[at : at + 4])
        kind = png[at + 4 : at + 8]
        if kind == b"IDAT":
            data += png[at + 8 : at + 8 + length]
        at += 12 + length
    return width, height, len(set(zlib.decompress(data)))


def test_the_chart_fits_1600_1000_and_400_pixels_in_chromium(tmp_path):
    page = tmp_path / "report.html"
    result = CliRunner().invoke(
        cli,
        ["report", "--db", str(states(tmp_path / "p.db")), "--format", "html", "-o", str(page)],
    )
    assert result.exit_code == 0, result.output
    expected = Chart()
    expected.feed(page.read_text())
    with devtools(tmp_path) as browser:
        for width in (1600, 1000, 400):
            browser.call(
                "Emulation.setDeviceMetricsOverride",
                width=width,
                height=900,
                deviceScaleFactor=1,
                mobile=False,
            )
            browser.call("Page.navigate", url=page.as_uri())
            browser.wait_for("Page.loadEventFired")
            answer = browser.call("Runtime.evaluate", expression=MEASURE, returnByValue=True)
            layout = json.loads(answer["result"]["value"])
            assert layout["inner"] == width
            assert layout["scroll"] <= width, (width, layout["scroll"])
            chart_box = layout["chart"]
            assert 0 <= chart_box["left"] and chart_box["right"] <= width, (width, chart_box)
            assert chart_box["width"] > width * 0.7  # scaled to the container, not shrunk away
            assert {item["key"] for item in layout["legend"]} == set(expected.legend)
            for item in layout["legend"]:
                box = item["box"]
                assert box["width"] > 0 and box["height"] > 0, (width, item)
                assert 0 <= box["left"] and box["right"] <= width, (width, item)
            shot = browser.call("Page.captureScreenshot", format="png")
            png = base64.b64decode(shot["data"])
            (tmp_path / f"chart-{width}.png").write_bytes(png)
            shot_width, shot_height, values = png_facts(png)
            assert (shot_width, shot_height) == (width, 900)
            assert values > 16, values  # drawn, not a blank page
            if os.environ.get("PROBE_KEEP_SCREENSHOT"):
                keep = Path(os.environ["PROBE_KEEP_SCREENSHOT"])
                (keep.parent / f"{keep.stem}-{width}{keep.suffix}").write_bytes(png)
