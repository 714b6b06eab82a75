"""What arrives: OONI's report and measurement bodies checked, re-analysed, and written to
PostgreSQL many at a time.

:func:`open_request` and :func:`measurement` check a body the way OONI's backend does
(§4 of the protocol notes) and more strictly where a public server should: every refusal is a
:class:`~probe.errors.BadRequest` whose message names what is wrong. :func:`measurement`
reads the measurement into our observations and judges it with *our* analysis; the
sender's verdict is kept aside, never copied.

:class:`Writer` is the group commit: each request puts its row on a queue and waits; a few
writer tasks take whatever is queued (up to ``max_batch`` rows) and insert it in one
statement and one transaction, so 50 uploaders cost one commit per batch, not one per
measurement, and every request is answered only once its row is committed. The columns go
as binary arrays (``%b``): the text format escapes every quote of a measurement's JSON with
a regular expression, which cost more than the analysis.
"""

from __future__ import annotations

import asyncio
import dataclasses
import datetime
import hashlib
import json
import re
import secrets
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import psycopg
from psycopg_pool import AsyncConnectionPool, PoolTimeout

from .. import __version__
from ..analysis import analyze
from ..analysis.fingerprints import Fingerprints
from ..errors import BadRequest
from ..measure.privacy import Scrubber
from ..model.network import is_asn, is_cc
from . import bridge, schema, scrub

DATA_FORMAT_VERSION = "0.2.0"
TEST_NAME = "web_connectivity"
_SOFTWARE = re.compile(r"^[0-9A-Za-z_.+-]{1,64}$")
_TIME = re.compile(r"^\d{4}-\d{2}-\d{2} \d{2}:\d{2}:\d{2}$")
REPORT_ID = re.compile(r"^\d{8}T\d{6}Z_webconnectivity_[A-Z]{2}_\d{1,10}_n1_[0-9a-f]{64}$")
#: Measurements older than this are refused (no month partition for the Unix epoch).
EARLIEST = datetime.datetime(2012, 1, 1, tzinfo=datetime.UTC)
#: How far in the future a measurement may start (a probe's clock may be off).
CLOCK_SKEW = datetime.timedelta(days=1)


def parse_json(body: bytes | str) -> Any:
    """A request body as JSON (UTF-8 only); 400 when it is not."""
    try:
        return json.loads(body if isinstance(body, str) else body.decode("utf-8"))
    except UnicodeDecodeError:
        raise BadRequest("the body is not UTF-8") from None
    except RecursionError:
        raise BadRequest("the body's JSON is nested too deeply") from None
    except ValueError as exc:
        raise BadRequest(f"the body is not JSON: {exc}") from None


def _field(
    data: dict[str, Any], name: str, pattern: re.Pattern[str] | Callable[[str], bool] | None = None
) -> str:
    value = data.get(name)
    if not isinstance(value, str):
        raise BadRequest(f"{name}: expected a string")
    valid = pattern is None or (
        pattern.match(value) if isinstance(pattern, re.Pattern) else pattern(value)
    )
    if not valid:
        raise BadRequest(f"{name}: {value[:40]!r} is not valid")
    return value


def _time(value: str, name: str) -> datetime.datetime:
    if not _TIME.match(value):
        raise BadRequest(f"{name}: expected YYYY-MM-DD hh:mm:ss (UTC)")
    try:
        t = datetime.datetime.strptime(value, "%Y-%m-%d %H:%M:%S").replace(tzinfo=datetime.UTC)
    except ValueError:
        raise BadRequest(f"{name}: {value!r} is not a time") from None
    if not EARLIEST <= t <= datetime.datetime.now(datetime.UTC) + CLOCK_SKEW:
        raise BadRequest(f"{name}: {value} is before 2012 or in the future")
    return t


def network(asn: str, cc: str) -> tuple[str | None, str | None]:
    """OONI's placeholders for an unknown network (AS0, ZZ) stored as unknown (NULL)."""
    return (None if asn == "AS0" else asn), (None if cc == "ZZ" else cc)


@dataclass(frozen=True, slots=True)
class Template:
    """What a report is opened with (OONI's fields)."""

    probe_asn: str
    probe_cc: str
    test_name: str
    test_version: str
    software_name: str
    software_version: str
    test_start_time: datetime.datetime


def open_request(data: Any) -> Template:
    """The body of ``POST /report``, checked."""
    if not isinstance(data, dict):
        raise BadRequest("expected a JSON object")
    if data.get("format", "json") != "json":
        raise BadRequest("format: only json is supported")
    if _field(data, "data_format_version") != DATA_FORMAT_VERSION:
        raise BadRequest(f"data_format_version: only {DATA_FORMAT_VERSION} is supported")
    test_name = _field(data, "test_name")
    if test_name != TEST_NAME:
        raise BadRequest(f"test_name: only {TEST_NAME} is collected here")
    return Template(
        probe_asn=_field(data, "probe_asn", is_asn),
        probe_cc=_field(data, "probe_cc", is_cc),
        test_name=test_name,
        test_version=_field(data, "test_version", _SOFTWARE),
        software_name=_field(data, "software_name", _SOFTWARE),
        software_version=_field(data, "software_version", _SOFTWARE),
        test_start_time=_time(_field(data, "test_start_time"), "test_start_time"),
    )


def new_report_id(template: Template) -> str:
    """OONI's 6-part report id, with 256 random bits (hex: no ``_`` inside a part)."""
    when = datetime.datetime.now(datetime.UTC).strftime("%Y%m%dT%H%M%SZ")
    asn = int(template.probe_asn[2:])
    return f"{when}_webconnectivity_{template.probe_cc}_{asn}_n1_{secrets.token_hex(32)}"


@dataclass(frozen=True, slots=True)
class Report:
    """An open report, as the collector remembers it."""

    report_id: str
    volunteer_id: int
    token_sha256: bytes
    probe_asn: str  # as opened (AS0 for unknown)
    probe_cc: str
    closed: bool = False


#: Columns of ``measurements`` written on arrival, in :meth:`Row.values` order.
COLUMNS = (
    "id", "start_time", "measurement_uid", "report_id", "volunteer_id", "vantage_id", "run_id",
    "probe_asn", "probe_cc", "probe_network_name", "input", "url", "domain", "category",
    "verdict", "blocking",
    "accessible", "dns_consistency", "failure", "blockpage", "confirmed", "reason", "evidence",
    "analysis_version", "submitted_verdict", "content", "position",
)  # fmt: skip
_TYPES = (
    "text", "timestamptz", "text", "text", "bigint", "text", "text", "text", "text", "text",
    "text", "text", "text", "text", "text", "text", "boolean", "text", "text", "text", "boolean",
    "text", "json", "text", "jsonb", "text", "integer",
)  # fmt: skip


@dataclass(frozen=True, slots=True)
class Row:
    values: tuple[Any, ...]  # in COLUMNS order

    @property
    def id(self) -> str:
        return str(self.values[0])

    @property
    def start_time(self) -> datetime.datetime:
        value = self.values[1]
        assert isinstance(value, datetime.datetime)
        return value

    @property
    def volunteer_id(self) -> int:
        return int(self.values[4])


def measurement(
    body: bytes, report: Report, fingerprints: Fingerprints, scrubber: Scrubber | None = None
) -> Row:
    """The body of ``POST /report/{id}`` checked against its report, re-analysed, as a row.

    ``scrubber`` holds the addresses the upload came from (never stored): they are scrubbed
    from the measurement before anything else reads it (:mod:`.scrub`): a site may have
    echoed the volunteer's address where the probe did not know it. Nothing to scrub: the
    JSON is stored as it was sent. A NUL a server sent (a block page, a title) is evidence and is
    kept (``\\u0000`` in the stored JSON; U+FFFD in the columns PostgreSQL's text cannot hold
    it in); a lone surrogate is not Unicode text at all: 400 for that measurement alone.
    """
    text = _utf8(body)
    data = parse_json(text)
    if not isinstance(data, dict):
        raise BadRequest("expected a JSON object")
    if _SURROGATE_ESCAPE.search(text):
        _refuse_surrogates(data, "")
    if scrubber is not None:
        clean = scrub.scrubbed(scrubber, data)
        if clean != data:
            data, text = clean, json.dumps(clean, ensure_ascii=False)
    if data.get("format", "json") != "json":
        raise BadRequest("format: only json is supported")
    content = data.get("content")
    if not isinstance(content, dict):
        raise BadRequest("content: expected the measurement as a JSON object")
    if content.get("report_id", report.report_id) != report.report_id:
        raise BadRequest("Inconsistent measurement: content.report_id is another report's")
    for name, expected in (
        ("probe_asn", report.probe_asn),
        ("probe_cc", report.probe_cc),
        ("test_name", TEST_NAME),
    ):
        if content.get(name) != expected:
            raise BadRequest(f"Inconsistent measurement: {name} differs from the report's")
    if content.get("probe_ip", "127.0.0.1") not in ("127.0.0.1", None):
        raise BadRequest("probe_ip: must be scrubbed to 127.0.0.1 (no addresses are collected)")
    start = _time(_field(content, "measurement_start_time"), "measurement_start_time")
    try:
        received = bridge.import_measurement(content)
    except bridge.FormatError as exc:
        raise BadRequest(f"not a Web Connectivity measurement we can read: {exc}") from None
    obs = received.imported.observations
    verdict = analyze(obs, fingerprints=fingerprints)
    asn, cc = network(report.probe_asn, report.probe_cc)
    digest = hashlib.sha256(received.measurement_id.encode()).hexdigest()[:16]
    now = datetime.datetime.now(datetime.UTC).strftime("%Y%m%d%H%M%S.%f")
    uid = f"{now}_{report.probe_cc}_webconnectivity_{digest}"
    evidence = [dataclasses.asdict(e) for e in verdict.evidence]
    values = (
        received.measurement_id,
        start,
        uid,
        report.report_id,
        report.volunteer_id,
        # The vantage is the token: what the sender calls its vantage is its word alone,
        # and one token must not count as many vantages (nor as another volunteer's).
        vantage_of(report.volunteer_id),
        received.run_id,
        asn,
        cc,
        received.probe_network_name,
        obs.input,
        obs.url,
        obs.domain,
        obs.category,
        verdict.verdict,
        verdict.blocking,
        verdict.accessible,
        verdict.dns_consistency,
        verdict.failure,
        verdict.blockpage,
        verdict.confirmed,
        verdict.reason,
        json.dumps(_no_nul(evidence), ensure_ascii=False),
        __version__,
        json.dumps(_no_nul(received.submitted_verdict), ensure_ascii=False),
        text,
        received.position,
    )
    return Row(tuple(_no_nul(v) if isinstance(v, str) else v for v in values))


def vantage_of(volunteer_id: int) -> str:
    """The vantage a volunteer's measurements count as: one per token."""
    return f"volunteer-{volunteer_id}"


#: A JSON escape of a UTF-16 surrogate: the only way a lone surrogate gets into decoded text.
_SURROGATE_ESCAPE = re.compile(r"\\u[dD][89a-fA-F]")


def _refuse_surrogates(value: Any, path: str) -> None:
    if isinstance(value, str):
        if any("\ud800" <= c <= "\udfff" for c in value):
            raise BadRequest(f"{path or 'the body'}: a lone surrogate is not Unicode text")
    elif isinstance(value, list):
        for i, item in enumerate(value):
            _refuse_surrogates(item, f"{path}[{i}]")
    elif isinstance(value, dict):
        for key, item in value.items():
            _refuse_surrogates(key, path)
            _refuse_surrogates(item, f"{path}.{key}" if path else key)


def _no_nul(value: Any) -> Any:
    """``value`` with NUL as U+FFFD in every string: PostgreSQL's text and jsonb cannot hold
    NUL (the measurement's own JSON keeps it, escaped)."""
    if isinstance(value, str):
        return value.replace("\x00", "\ufffd") if "\x00" in value else value
    if isinstance(value, list):
        return [_no_nul(item) for item in value]
    if isinstance(value, dict):
        return {_no_nul(k): _no_nul(v) for k, v in value.items()}
    return value


def _utf8(body: bytes) -> str:
    try:
        return body.decode("utf-8")
    except UnicodeDecodeError:
        raise BadRequest("the body is not UTF-8") from None


# ------------------------------------------------------------------ writing


@dataclass(frozen=True, slots=True)
class Outcome:
    """What became of a row: ``added``, ``present`` (the same volunteer sent it before: the
    first uid), ``taken`` (another volunteer's measurement id) or ``revoked``."""

    status: str
    measurement_uid: str | None = None


# A measurement id is the volunteer's for good (``measurement_ids``, one row per id whatever
# its start time): the partitioned table's key must hold the partition column, so it alone
# would let another volunteer store the same id with another start time.
_INSERT = f"""
with input as (
    select * from unnest({", ".join(f"%b::{t}[]" for t in _TYPES)})
        with ordinality as t({", ".join(COLUMNS)}, arrival)
), claimed as (
    insert into measurement_ids (id, volunteer_id, measurement_uid)
    select distinct on (id) id, volunteer_id, measurement_uid from input
    where exists (
        select 1 from volunteers v where v.id = input.volunteer_id and v.revoked_at is null
    )
    order by id, arrival
    on conflict (id) do nothing
    returning id
), inserted as (
    insert into measurements ({", ".join(COLUMNS)})
    select distinct on (id) {", ".join(COLUMNS)} from input
    where id in (select id from claimed)
    order by id, arrival
    on conflict (id, start_time) do nothing
    returning id
)
select id from inserted
"""

_EXISTING = """
select id, measurement_uid, volunteer_id from measurement_ids where id = any(%s::text[])
"""

#: Errors that one row's values cause (a value PostgreSQL or its encoding refuses): the
#: batch is written again row by row, so that only that row fails.
_ROW_ERRORS = (psycopg.DataError, UnicodeEncodeError)


class Writer:
    """Group commit of measurement rows (see the module docstring)."""

    def __init__(
        self, pool: AsyncConnectionPool, dsn: str, *, tasks: int = 3, max_batch: int = 256
    ) -> None:
        self.pool = pool
        self.dsn = dsn
        self.max_batch = max_batch
        self.queue: asyncio.Queue[tuple[Row, asyncio.Future[Outcome]]] = asyncio.Queue()
        self.months: set[datetime.date] = set()
        self._partition_lock = asyncio.Lock()
        self._tasks = [asyncio.create_task(self._run()) for _ in range(tasks)]

    async def close(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    async def write(self, row: Row) -> Outcome:
        """Queue ``row``; its outcome once committed. Raises ``psycopg.OperationalError``
        when the database is unreachable (the caller answers 503)."""
        future: asyncio.Future[Outcome] = asyncio.get_running_loop().create_future()
        await self.queue.put((row, future))
        return await future

    async def _run(self) -> None:
        while True:
            batch = [await self.queue.get()]
            while len(batch) < self.max_batch and not self.queue.empty():
                batch.append(self.queue.get_nowait())
            live = [(row, f) for row, f in batch if not f.done()]
            try:
                outcomes = await self._insert([row for row, _ in live])
            except _ROW_ERRORS:
                await self._one_by_one(live)
                continue
            except (psycopg.Error, PoolTimeout) as exc:  # the database: each request says so
                for _, future in live:
                    if not future.done():
                        future.set_exception(exc)
                continue
            except Exception as exc:  # a bug: surfaces in every request of the batch
                for _, future in live:
                    if not future.done():
                        future.set_exception(exc)
                continue
            for (_, future), outcome in zip(live, outcomes, strict=True):
                if not future.done():
                    future.set_result(outcome)

    async def _one_by_one(self, live: list[tuple[Row, asyncio.Future[Outcome]]]) -> None:
        """Each row of a batch that failed on a row's values in a transaction of its own: the
        rows that cannot be stored get a 400, the others are committed."""
        for row, future in live:
            try:
                outcome = (await self._insert([row]))[0]
            except _ROW_ERRORS as exc:
                reason = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else ""
                failure: BaseException = BadRequest(f"the measurement cannot be stored: {reason}")
                if not future.done():
                    future.set_exception(failure)
                continue
            except (psycopg.Error, PoolTimeout) as exc:
                if not future.done():
                    future.set_exception(exc)
                continue
            if not future.done():
                future.set_result(outcome)

    async def _partitions(self, rows: Sequence[Row]) -> None:
        months = {schema.month_of(row.start_time) for row in rows} - self.months
        if not months:
            return
        async with self._partition_lock:
            months -= self.months
            if months:
                await asyncio.to_thread(_ensure_partitions, self.dsn, months)
                self.months |= months

    async def _insert(self, rows: Sequence[Row]) -> list[Outcome]:
        if not rows:
            return []
        await self._partitions(rows)
        columns = [list(column) for column in zip(*(row.values for row in rows), strict=True)]
        async with self.pool.connection() as conn:
            async with conn.transaction():
                cursor = await conn.execute(_INSERT, columns)
                added = {r[0] for r in await cursor.fetchall()}
            outcomes: dict[int, Outcome] = {}
            missing = [i for i, row in enumerate(rows) if row.id not in added]
            existing: dict[str, tuple[str, int]] = {}
            revoked: set[int] = set()
            if missing:
                cursor = await conn.execute(_EXISTING, [[rows[i].id for i in missing]])
                existing = {r[0]: (r[1], r[2]) for r in await cursor.fetchall()}
                cursor = await conn.execute(
                    "select id from volunteers where id = any(%s) and revoked_at is not null",
                    [list({rows[i].volunteer_id for i in missing})],
                )
                revoked = {r[0] for r in await cursor.fetchall()}
        first: dict[str, Row] = {}
        for i, row in enumerate(rows):
            if row.volunteer_id in revoked:
                outcomes[i] = Outcome("revoked")
            elif row.id in added and row.id not in first:
                first[row.id] = row
                outcomes[i] = Outcome("added", row.values[2])
            else:  # sent before, or twice in this batch: whose is it?
                uid: str | None = None
                owner: int | None = None
                if row.id in first:
                    uid, owner = first[row.id].values[2], first[row.id].volunteer_id
                elif row.id in existing:
                    uid, owner = existing[row.id]
                same = owner == row.volunteer_id
                outcomes[i] = Outcome("present", uid) if same else Outcome("taken")
        return [outcomes[i] for i in range(len(rows))]


def _ensure_partitions(dsn: str, months: set[datetime.date]) -> None:
    with schema.connect(dsn) as conn:
        schema.ensure_partitions(conn, months)
