"""The runner (probe/app/run.py) over loopback servers, without root: its pacing (at most
``concurrency`` targets busy at once), results stored in list order whatever order they end
in, and a whole ``check`` run with identity, DoH control resolver and a real test helper.
"""

from __future__ import annotations

import dataclasses
import threading

import pytest

from probe.app.run import check, run
from probe.measure.measurer import Measurer
from probe.measure.privacy import Scrubber
from probe.net.resolvers import DoHClient
from probe.store import Store, open_db
from tests.loopback import HelperProcess, exempt, page
from tests.test_core_measure import PAGE, settings_for, target

#: Only against a hang: every wait below ends on its condition.
SAFETY = 30.0


class Gate:
    """A route that holds each request until ``width`` are held at once (or every request
    left has come), then lets them go together; ``most`` is the most ever held at once."""

    def __init__(self, width: int, total: int) -> None:
        self.width, self.total = width, total
        self.changed = threading.Condition()
        self.arrived = self.released = self.held = self.most = 0

    def __call__(self, _request):
        with self.changed:
            mine = self.arrived
            self.arrived += 1
            self.held += 1
            self.most = max(self.most, self.held)
            if self.held >= self.width or self.arrived == self.total:
                self.released = self.arrived
                self.changed.notify_all()
            assert self.changed.wait_for(lambda: mine < self.released, SAFETY)
            self.held -= 1
        return page(PAGE)


def servers_for(loopback, count: int, route):
    webs = [loopback.http({"/": route}) for _ in range(count)]
    dns = loopback.dns({f"site{i}.test": [web.host] for i, web in enumerate(webs)})
    urls = [web.url("/", f"site{i}.test") for i, web in enumerate(webs)]
    return webs, dns, urls


async def run_all(settings, urls, tmp_path, concurrency, on_finished=None, **options):
    store = Store(open_db(tmp_path / "probe.db"))
    run_id = store.start_run(inputs=urls, settings={}, targets=len(urls))
    finished = []

    def ended(result):
        finished.append(result.target.url)
        if on_finished is not None:
            on_finished(finished)

    doh = DoHClient(settings.ssl_context)
    try:
        measurer = Measurer(settings, doh_client=doh, helpers=None)
        summary = await run(
            [target(url) for url in urls],
            measurer,
            store,
            run_id,
            concurrency=concurrency,
            scrubber=Scrubber(),
            on_result=ended,
            **options,
        )
    finally:
        await doh.aclose()
    return store, run_id, summary, finished


@pytest.mark.asyncio
@pytest.mark.parametrize("concurrency", [1, 2, 3])
async def test_no_more_targets_busy_than_the_concurrency(loopback, tmp_path, concurrency):
    gate = Gate(concurrency, total=6)
    webs, dns, urls = servers_for(loopback, 6, gate)
    settings = settings_for(loopback, dns, *webs)
    _store, _run, summary, finished = await run_all(settings, urls, tmp_path, concurrency)
    assert summary.errors == [] and sum(summary.counts.values()) == 6
    assert sorted(finished) == sorted(urls)
    assert gate.most == concurrency  # reached (the gate waits for it), never passed


@pytest.mark.asyncio
async def test_results_are_stored_in_list_order_whatever_order_they_end(loopback, tmp_path):
    others_done = threading.Event()

    def last(_request):
        assert others_done.wait(SAFETY)  # until the other four targets have been stored
        return page(PAGE)

    def finished_so_far(finished):
        if len(finished) == 4:
            others_done.set()

    webs = [loopback.http({"/": last})] + [loopback.http({"/": page(PAGE)}) for _ in range(4)]
    dns = loopback.dns({f"site{i}.test": [web.host] for i, web in enumerate(webs)})
    urls = [web.url("/", f"site{i}.test") for i, web in enumerate(webs)]
    settings = settings_for(loopback, dns, *webs)
    store, run_id, summary, finished = await run_all(
        settings, urls, tmp_path, concurrency=8, on_finished=finished_so_far
    )
    assert finished[-1] == urls[0]  # the first target ended last ...
    stored = list(store.run_measurements(run_id))
    assert [row["input"] for row in stored] == urls  # ... and is stored first
    assert [row["position"] for row in stored] == list(range(5))


@pytest.mark.asyncio
async def test_a_whole_check_run(loopback, tmp_path, certificates):
    """``probe.app.run.check``, as ``probe check`` calls it: network identity from the helper's
    /whoami, the system resolver, a DoH control resolver, the helper's control; one run
    recorded and marked complete, each measurement with its control."""
    from probe.app.config import check_config
    from probe.store import results

    webs, dns, urls = servers_for(loopback, 3, page(PAGE))
    doh = loopback.doh(dns)
    networks = tuple(str(n) for n in exempt(*webs))
    with HelperProcess(resolver=dns.url, bogons_exempt=networks) as helper:
        config = check_config(
            resolver=dns.url,
            control_resolvers=[doh.url("/dns-query")],
            helpers=[helper.url],
            ca_file=str(certificates.ca_file),
            probe_asn="AS64500",
            probe_cc="KG",
            concurrency=2,
        )
        config = dataclasses.replace(
            config, settings=dataclasses.replace(config.settings, bogons_exempt=exempt(*webs))
        )
        db = open_db(tmp_path / "probe.db")
        notices = []
        summary = await check(
            [target(url) for url in urls],
            config,
            Store(db),
            total=len(urls),
            inputs=urls,
            on_notice=notices.append,
        )
    assert summary.errors == [] and summary.status == "complete"
    assert summary.counts["accessible"] == len(urls), summary.counts
    detail = results.run_detail(db, summary.run_id)
    assert detail["status"] == "complete"
    assert [m["input"] for m in detail["measurements"]] == urls
    assert {m["verdict"] for m in detail["measurements"]} == {"accessible"}
    for web in webs:
        assert len(web.requests) == 2  # the probe's fetch, and the helper's
