"""The collector: OONI's collector protocol in front of PostgreSQL, for many volunteers.

Routes (JSON in and out, as OONI's probe services answer them):

* ``POST /report``: open a report (OONI's template fields) -> ``{"backend_version",
  "report_id", "supported_formats": ["json"]}``;
* ``POST /report/{report_id}``: ``{"format": "json", "content": MEASUREMENT}`` -> 200
  ``{"measurement_uid"}`` once it is committed; a resubmission of a measurement (same id)
  answers the first uid and adds nothing;
* ``POST /report/{report_id}/close`` -> ``{"status": "success"}``;
* ``GET /timeline?domain=&asn=&since=&until=&min_measurements=&min_vantages=&anomalies=1``:
  what ``probe timeline --json`` prints over every volunteer's measurements;
* ``GET /report?format=md|html|csv|json&...&max_gap_hours=``: what ``probe report`` writes;
* ``GET /health``: 200 when the database answers.

Unlike OONI's, every ``POST`` needs ``Authorization: Bearer TOKEN`` (``probe collector
add-volunteer``): a missing, unknown or revoked token gets 401 and nothing is stored. A report
belongs to the volunteer who opened it. Reads need a token too unless the collector serves
them publicly (``--public-reads``).

Answers: 400 with ``{"error": reason}`` for a malformed body, 401 for the token, 404 for an
unknown report, 409 for a measurement id another volunteer submitted, 413 for a body too
large, 503 with ``Retry-After`` when too many requests are in flight or the database is away
(the probe keeps the measurement and tries again later).
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import io
import json
import os
import re
import signal
import socket
import sys
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs

import psycopg
from psycopg_pool import AsyncConnectionPool, PoolTimeout

from .. import __version__
from ..analysis.fingerprints import Fingerprints
from ..errors import BadRequest, CollectorDatabaseError
from ..net.http_server import log_to_stderr
from . import bridge, ingest, reader, schema, scrub, tokens
from .http import Limits, Request, Response, error, log, server

#: Reports remembered (their volunteer and network) without asking the database again.
REPORT_CACHE = 100_000
_REPORT_PATH = re.compile(r"^/report/([^/]{1,200})(/close)?$")
_TEXT_TYPES = {
    "md": "text/markdown; charset=utf-8",
    "html": "text/html; charset=utf-8",
    "csv": "text/csv; charset=utf-8",
    "json": "application/json",
}


@dataclass
class CollectorConfig:
    """How to run the collector; see :func:`serve`."""

    host: str
    port: int
    dsn: str
    limits: Limits = field(default_factory=Limits)
    public_reads: bool = False
    max_reads: int = 2  # timelines and reports computed at once; beyond: 503
    fingerprint_files: tuple[str, ...] = ()
    writers: int = 3  # concurrent group-commit transactions (per process)
    workers: int = 1  # processes serving the same socket (the analysis is CPU-bound)


def _json(status: int, payload: Any, note: str = "") -> Response:
    return Response(status, json.dumps(payload).encode(), note=note)


def _unauthorized(reason: str) -> Response:
    response = error(401, reason)
    response.headers.append(("WWW-Authenticate", 'Bearer realm="probe-collector"'))
    return response


def bearer(headers: dict[str, str]) -> str | None:
    value = headers.get("authorization", "")
    scheme, _, token = value.partition(" ")
    return token.strip() if scheme.lower() == "bearer" and token.strip() else None


class Collector:
    """The routes over a connection pool and a :class:`~probe.collector.ingest.Writer`."""

    def __init__(self, config: CollectorConfig, pool: AsyncConnectionPool) -> None:
        self.config = config
        self.pool = pool
        self.fingerprints = Fingerprints.load(extra_files=config.fingerprint_files)
        self.writer = ingest.Writer(pool, config.dsn, tasks=config.writers)
        self.reports: OrderedDict[str, ingest.Report] = OrderedDict()
        self.reads = asyncio.Semaphore(config.max_reads)
        self.scrubbers = scrub.Scrubbers()  # the uploaders' addresses: memory only

    async def close(self) -> None:
        await self.writer.close()

    async def handle(self, request: Request) -> Response:
        try:
            return await self._route(request)
        except BadRequest as exc:
            return error(exc.status, str(exc))
        except (psycopg.OperationalError, PoolTimeout) as exc:
            log.warning("database unavailable: %s", str(exc).strip().splitlines()[:1])
            response = error(503, "the database is unavailable, retry later")
            response.headers.append(("Retry-After", "5"))
            return response

    async def _route(self, request: Request) -> Response:
        method, path = request.method, request.path
        if path == "/report":
            if method == "POST":
                return await self._open(request)
            if method == "GET":
                return await self._read(request, "report")
            return error(405, "use POST to open a report, GET to read the report")
        match = _REPORT_PATH.match(path)
        if match:
            if method != "POST":
                return error(405, "use POST")
            if match.group(2):
                return await self._close(request, match.group(1))
            return await self._submit(request, match.group(1))
        if path == "/timeline":
            if method != "GET":
                return error(405, "use GET")
            return await self._read(request, "timeline")
        if path == "/health" and method == "GET":
            async with self.pool.connection() as conn:
                await conn.execute("select 1")
            return _json(200, {"status": "ok", "version": __version__})
        return error(404, "not found")

    # -------------------------------------------------------------- authentication

    async def _volunteer(self, request: Request) -> tuple[int, bytes]:
        """The token's volunteer (id, token hash); raises :class:`_Denied`."""
        token = bearer(request.headers)
        if token is None:
            raise _Denied("an Authorization: Bearer token is required")
        if not tokens.well_formed(token):
            raise _Denied("unknown token")
        digest = tokens.token_hash(token)
        async with self.pool.connection() as conn:
            cursor = await conn.execute(
                "select id, revoked_at is not null from volunteers where token_sha256 = %s",
                [digest],
            )
            row = await cursor.fetchone()
        if row is None:
            raise _Denied("unknown token")
        if row[1]:
            raise _Denied("this token was revoked")
        return int(row[0]), digest

    async def _report(self, request: Request, report_id: str) -> ingest.Report:
        if not ingest.REPORT_ID.match(report_id):
            raise BadRequest("Incorrect format: not a report id")
        token = bearer(request.headers)
        if token is None:
            raise _Denied("an Authorization: Bearer token is required")
        report = self.reports.get(report_id)
        if report is None:
            async with self.pool.connection() as conn:
                cursor = await conn.execute(
                    """select r.volunteer_id, v.token_sha256, coalesce(r.probe_asn, 'AS0'),
                              coalesce(r.probe_cc, 'ZZ'), r.closed_at is not null
                       from reports r join volunteers v on v.id = r.volunteer_id
                       where r.report_id = %s""",
                    [report_id],
                )
                row = await cursor.fetchone()
            if row is None:
                raise BadRequest("no such report", 404)
            report = ingest.Report(report_id, int(row[0]), bytes(row[1]), row[2], row[3], row[4])
            self._remember(report)
        if tokens.token_hash(token) != report.token_sha256:
            raise _Denied("this report was opened with another token")
        return report

    def _remember(self, report: ingest.Report) -> None:
        self.reports[report.report_id] = report
        self.reports.move_to_end(report.report_id)
        while len(self.reports) > REPORT_CACHE:
            self.reports.popitem(last=False)

    # -------------------------------------------------------------- the protocol

    async def _open(self, request: Request) -> Response:
        try:
            volunteer, digest = await self._volunteer(request)
        except _Denied as denied:
            return _unauthorized(str(denied))
        template = ingest.open_request(ingest.parse_json(request.body))
        report_id = ingest.new_report_id(template)
        asn, cc = ingest.network(template.probe_asn, template.probe_cc)
        async with self.pool.connection() as conn:
            await conn.execute(
                """insert into reports (report_id, volunteer_id, probe_asn, probe_cc, test_name,
                       test_version, software_name, software_version, test_start_time)
                   values (%s, %s, %s, %s, %s, %s, %s, %s, %s)""",
                [report_id, volunteer, asn, cc, template.test_name, template.test_version,
                 template.software_name, template.software_version, template.test_start_time],
            )  # fmt: skip
            await conn.execute(
                """insert into volunteer_networks (volunteer_id, probe_asn, probe_cc,
                       first_report_at, last_report_at, reports)
                   values (%s, %s, %s, now(), now(), 1)
                   on conflict (volunteer_id, probe_asn, probe_cc) do update
                   set last_report_at = now(), reports = volunteer_networks.reports + 1""",
                [volunteer, template.probe_asn, template.probe_cc],
            )
        self._remember(
            ingest.Report(report_id, volunteer, digest, template.probe_asn, template.probe_cc)
        )
        return _json(
            200,
            {
                "backend_version": __version__,
                "report_id": report_id,
                "supported_formats": ["json"],
            },
            note="opened",
        )

    async def _submit(self, request: Request, report_id: str) -> Response:
        try:
            report = await self._report(request, report_id)
        except _Denied as denied:
            return _unauthorized(str(denied))
        if report.closed:
            return error(409, "this report is closed: open a new one")
        scrubber = self.scrubbers.of(request.peer, request.headers)
        try:
            row = ingest.measurement(request.body, report, self.fingerprints, scrubber)
        except BadRequest as exc:  # a reason may quote what was sent: said and logged scrubbed
            if scrubber is None:
                raise
            raise BadRequest(scrubber.text(str(exc)), exc.status) from None
        outcome = await self.writer.write(row)
        if outcome.status == "revoked":
            return _unauthorized("this token was revoked")
        if outcome.status == "taken":
            return error(409, "this measurement id was submitted by another volunteer")
        # x_status (ours): "added", or "present" when it was there already (nothing added).
        payload = {"measurement_uid": outcome.measurement_uid, "x_status": outcome.status}
        return _json(200, payload, note=outcome.status)

    async def _close(self, request: Request, report_id: str) -> Response:
        try:
            report = await self._report(request, report_id)
        except _Denied as denied:
            return _unauthorized(str(denied))
        async with self.pool.connection() as conn:
            await conn.execute(
                "update reports set closed_at = now() where report_id = %s and closed_at is null",
                [report_id],
            )
        self._remember(
            ingest.Report(
                report.report_id, report.volunteer_id, report.token_sha256, report.probe_asn,
                report.probe_cc, closed=True,
            )
        )  # fmt: skip
        return _json(200, {"status": "success"}, note="closed")

    # -------------------------------------------------------------- reading

    async def _read(self, request: Request, what: str) -> Response:
        if not self.config.public_reads:
            try:
                await self._volunteer(request)
            except _Denied as denied:
                return _unauthorized(str(denied))
        query = reader.Query.parse(parse_qs(request.query, keep_blank_values=True), what)
        if self.reads.locked():
            response = error(503, "too many timelines and reports being computed, retry later")
            response.headers.append(("Retry-After", "10"))
            return response
        async with self.reads:
            body, content_type = await asyncio.to_thread(self._compute, query)
        return Response(200, body, content_type=content_type, note=what)

    def _compute(self, query: reader.Query) -> tuple[bytes, str]:
        out = io.StringIO()
        with schema.connect(self.config.dsn) as conn:
            conn.autocommit = False
            summaries = reader.iter_summaries(conn, query.filters)
            if query.what == "timeline":
                out.writelines(
                    bridge.timeline_lines(summaries, query.options, anomalies=query.anomalies)
                )
                return out.getvalue().encode(), "application/x-ndjson; charset=utf-8"
            now = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
            with schema.connect(self.config.dsn) as details:
                names = reader.network_names(details)
                bridge.write_report(
                    summaries,
                    lambda ids: reader.measurement_details(details, ids),
                    out,
                    fmt=query.fmt,
                    generated_at=now,
                    filters=query.shown,
                    options=query.options,
                    network_names=names,
                )
        return out.getvalue().encode(), _TEXT_TYPES[query.fmt]


class _Denied(Exception):
    """No valid token: 401."""


# ------------------------------------------------------------------ running it


async def open_pool(dsn: str, size: int) -> AsyncConnectionPool:
    """A pool of autocommit connections; raises :class:`CollectorDatabaseError`."""
    pool = AsyncConnectionPool(
        dsn, min_size=1, max_size=size, kwargs={"autocommit": True}, open=False, timeout=10.0
    )
    try:
        await pool.open(wait=True, timeout=10.0)
    except PoolTimeout:
        await pool.close()
        raise CollectorDatabaseError("cannot connect to the database (10 s)") from None
    return pool


def prepare(dsn: str) -> list[str]:
    """Create or migrate the schema (the steps applied); :class:`CollectorDatabaseError`."""
    with schema.connect(dsn) as conn:
        return schema.migrate(conn)


def listen(host: str, port: int) -> socket.socket:
    """A listening socket (``OSError`` when the address is taken)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    sock.listen(4096)
    sock.setblocking(False)
    return sock


def serve(config: CollectorConfig) -> None:
    """Migrate, then serve until SIGINT or SIGTERM; prints ``listening on HOST:PORT`` to
    stderr. Raises :class:`CollectorDatabaseError` or ``OSError``.

    With ``workers`` > 1, that many processes accept on the one listening socket (the
    kernel spreads the connections): parsing and analysing measurements is CPU-bound
    Python, one core per process. This process is one of them and the others' parent: they
    die with it (``PR_SET_PDEATHSIG``), and it stops them when it stops.
    """
    log_to_stderr(log)
    applied = prepare(config.dsn)
    if applied:
        log.info("schema steps applied: %s", ", ".join(applied))
    sock = listen(config.host, config.port)
    children = []
    for _ in range(config.workers - 1):
        pid = os.fork()
        if pid == 0:  # a worker: serve, and never return into the parent's code
            _die_with_parent()
            code = 0
            try:
                asyncio.run(_serve(config, sock, announce=False))
            except BaseException:
                log.exception("worker failed")
                code = 1
            finally:
                os._exit(code)
        children.append(pid)
    try:
        asyncio.run(_serve(config, sock))
    finally:
        for pid in children:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGTERM)
        for pid in children:
            with contextlib.suppress(ChildProcessError):
                os.waitpid(pid, 0)


def _die_with_parent() -> None:
    with contextlib.suppress(OSError, AttributeError):
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


async def _serve(config: CollectorConfig, sock: socket.socket, announce: bool = True) -> None:
    pool = await open_pool(config.dsn, config.writers + 8)
    collector = Collector(config, pool)
    http = server(collector.handle, config.limits)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    try:
        await http.start(sock=sock)
        host, port = sock.getsockname()[:2]
        shown = f"[{host}]" if ":" in host else host
        if announce:
            print(f"listening on {shown}:{port}", file=sys.stderr, flush=True)
        await stop.wait()
        log.info("stopping")
    finally:
        await http.close()
        await collector.close()
        with contextlib.suppress(PoolTimeout):
            await pool.close()
