"""``probe upload``: the volunteer's measurements to a collector, each accepted exactly once.

What is sent: every measurement of *this* probe (the database's ``local`` vantage: not
merged ones, not OONI imports; not pruned ones either, whose observations are gone and could
not be analysed again) that the collector has not accepted yet, oldest first, each as
the OONI JSON of ``probe export`` (``probe_ip`` is 127.0.0.1: no address of the
volunteer is in it), gzip-compressed, over OONI's collector protocol: open a report, submit
each measurement of a batch to it, close it. A new report is opened for each batch and
whenever the network (AS, country) changes, as OONI's probes do.

What is kept: the ``uploads`` table (schema step m030) records, per collector, each
measurement the collector accepted (with its ``measurement_uid``) or refused (400, 409, 413:
with the reason and the time). A refusal is not for ever: the collector or the probe may be
fixed (a block page with a NUL byte was refused until both were), and an unattended probe has
nobody to type ``--retry-refused``, so a refused measurement is sent again by the first upload
a day (:data:`RETRY_REFUSED_AFTER`) after its refusal, once a day at most; at once with
``--retry-refused``. It is written right after
each answer, one commit per measurement, so an upload stopped at any point sends nothing
twice that was accepted and recorded; a measurement whose answer was lost on the way is sent
again and the collector, idempotent by measurement id, adds nothing. Nothing is ever
deleted here: the results stay in the volunteer's database whatever the collector says.

Failures: a connection error, a timeout, 429 or 5xx is retried with exponential backoff
(and ``Retry-After`` when the collector gives one); after ``retries`` failures in a row the
upload stops with :class:`~probe.errors.UploadError` and the rest waits for the next upload.
401 (no, unknown or revoked token) stops at once.
"""

from __future__ import annotations

import datetime
import gzip
import json
import random
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
from sqlite_utils import Database

from .. import __version__
from ..errors import InputError, UploadError
from ..model.addresses import is_loopback
from ..model.http import retry_after
from ..model.records import utc_now
from ..net.guarded_httpx import Transport
from ..store.exports import export_measurement
from ..store.locks import Busy, file_lock, lock_path

#: Statuses that mean "later": the collector or the path is busy or broken for now.
RETRIED = frozenset({408, 429, 500, 502, 503, 504})
#: Statuses that mean "never like this": recorded as refused, with the collector's reason.
REFUSED = frozenset({400, 409, 413, 415, 422})
MAX_DELAY = 300.0  # seconds between two tries at most
#: How long after a refusal the measurement is sent again by itself.
RETRY_REFUSED_AFTER = datetime.timedelta(days=1)


def collector_url(url: str) -> str:
    """The collector's base URL, checked (http or https, a host, no credentials)."""
    text = url.strip().rstrip("/")
    try:
        parts = httpx.URL(text)
    except httpx.InvalidURL as exc:
        raise InputError(f"--collector {url!r}: {exc}") from None
    if parts.scheme not in ("http", "https") or not parts.host:
        raise InputError(f"--collector {url!r}: expected an http:// or https:// URL")
    if parts.userinfo:
        raise InputError(f"--collector {url!r}: give the token with --token, not in the URL")
    return text


def cleartext_warning(url: str) -> str | None:
    """What to tell the volunteer when ``url`` (checked) sends the token in cleartext: an
    ``http://`` collector that is not on this machine. None for https and loopback."""
    parts = httpx.URL(url)
    if parts.scheme != "http" or is_loopback(parts.host) or parts.host == "localhost":
        return None
    return (
        f"warning: the collector {url} is http://: your token and measurements travel "
        "unencrypted, so anyone on the path (your ISP too) can read them and upload as you; "
        "ask its operator for an https:// address"
    )


def _pending_sql(collector: str | None, refused_by: str | None) -> tuple[str, list[Any]]:
    """The measurements not accepted (by ``collector``, else by any), nor refused: those
    refused at ``refused_by`` (UTC) or before are taken too."""
    done = "select 1 from uploads u where u.measurement_id = m.id"
    args: list[Any] = []
    if collector is not None:
        done += " and u.collector = ?"
        args.append(collector.strip().rstrip("/"))
    if refused_by is not None:
        done += " and (u.status = 'accepted' or u.at > ?)"
        args.append(refused_by)
    sql = f"""
        from measurements m
        join runs r on r.id = m.run_id
        join vantages v on v.id = r.vantage_id and v.kind = 'local'
        where m.pruned = 0 and not exists ({done})
    """
    return sql, args


def pending(db: Database, collector: str | None = None) -> int:
    """How many of this probe's measurements wait for upload (to ``collector``, else to
    any collector)."""
    sql, args = _pending_sql(collector, None)
    return int(db.execute(f"select count(*) {sql}", args).fetchone()[0])


def refused(db: Database, collector: str | None = None) -> tuple[int, str | None]:
    """How many of this probe's measurements the collector (``collector``, else any) refused
    and not accepted since, and the last reason given: they stay in the database and
    ``--retry-refused`` sends them again."""
    where = "u.status = 'refused'"
    args: list[Any] = []
    if collector is not None:
        where += " and u.collector = ?"
        args.append(collector.strip().rstrip("/"))
    accepted = (
        "select 1 from uploads a where a.measurement_id = u.measurement_id "
        "and a.collector = u.collector and a.status = 'accepted'"
    )
    row = db.execute(
        f"""select count(distinct u.measurement_id), max(u.at) from uploads u
            where {where} and not exists ({accepted})""",
        args,
    ).fetchone()
    count = int(row[0])
    if not count:
        return 0, None
    reason = db.execute(
        f"select reason from uploads u where {where} order by at desc limit 1", args
    ).fetchone()[0]
    return count, reason


@dataclass
class Uploaded:
    """What one upload did."""

    accepted: int = 0  # newly accepted
    present: int = 0  # the collector had them already (an answer lost last time)
    refused: list[tuple[str, str]] = field(default_factory=list)  # (measurement id, reason)
    pending: int = 0  # still waiting after this upload


@dataclass
class Client:
    """The collector's protocol, with retries (see the module docstring)."""

    url: str
    token: str
    retries: int = 5
    backoff: float = 2.0  # seconds before the first retry; doubles each time
    timeout: float = 60.0
    sleep: Callable[[float], None] = time.sleep
    http: httpx.Client = field(init=False)

    def __post_init__(self) -> None:
        self.http = httpx.Client(
            timeout=self.timeout,
            headers={
                "Authorization": f"Bearer {self.token}",
                "User-Agent": f"probe/{__version__}",
                "Content-Type": "application/json",
            },
            trust_env=False,
            transport=Transport(),  # never where the network points the name at a bogon
        )

    def close(self) -> None:
        self.http.close()

    def post(self, path: str, payload: Any) -> httpx.Response:
        """POST ``payload`` (gzip JSON); the answer, after retries. Raises UploadError."""
        body = gzip.compress(json.dumps(payload, ensure_ascii=False).encode(), compresslevel=6)
        failure = ""
        for attempt in range(self.retries + 1):
            wait = None
            try:
                response = self.http.post(
                    self.url + path, content=body, headers={"Content-Encoding": "gzip"}
                )
            except httpx.TransportError as exc:
                failure = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
            else:
                if response.status_code == 401:
                    raise UploadError(f"the collector refused the token: {_reason(response)}")
                if response.status_code not in RETRIED:
                    return response
                failure = f"HTTP {response.status_code}: {_reason(response)}"
                wait = retry_after(response.headers.get("retry-after"))
            if attempt == self.retries:
                break
            delay = min(MAX_DELAY, self.backoff * 2**attempt) * random.uniform(0.5, 1.0)
            self.sleep(max(delay, min(wait or 0.0, MAX_DELAY)))
        raise UploadError(f"{self.url} did not answer ({failure}) after {self.retries + 1} tries")

    def open_report(self, content: dict[str, Any]) -> str:
        template = {
            key: content.get(key)
            for key in (
                "probe_asn",
                "probe_cc",
                "software_name",
                "software_version",
                "test_name",
                "test_start_time",
                "test_version",
            )  # fmt: skip
        }
        template.update(data_format_version=content.get("data_format_version"), format="json")
        response = self.post("/report", template)
        data = _json(response)
        if response.status_code != 200 or not isinstance(data.get("report_id"), str):
            raise UploadError(f"the collector would not open a report: {_reason(response)}")
        return str(data["report_id"])

    def close_report(self, report_id: str) -> None:
        try:
            self.post(f"/report/{report_id}/close", {})
        except UploadError:
            pass  # a report left open costs nothing: the measurements are in


def _json(response: httpx.Response) -> dict[str, Any]:
    try:
        data = response.json()
    except ValueError:
        return {}
    return data if isinstance(data, dict) else {}


def _reason(response: httpx.Response) -> str:
    error = _json(response).get("error")
    return str(error)[:300] if error else f"HTTP {response.status_code}"


def _todo(db: Database, collector: str, retry_refused: bool) -> Iterator[str]:
    now = datetime.datetime.now(datetime.UTC)
    refused_by = now if retry_refused else now - RETRY_REFUSED_AFTER
    sql, args = _pending_sql(collector, refused_by.strftime("%Y-%m-%d %H:%M:%S"))
    rows = db.execute(f"select m.id {sql} order by r.started_at, m.run_id, m.position", args)
    for (measurement_id,) in rows.fetchall():
        yield measurement_id


def _record(
    db: Database, measurement_id: str, collector: str, status: str, uid: str | None, reason: str
) -> None:
    with db.conn:
        db.execute(
            """insert or replace into uploads
               (measurement_id, collector, status, measurement_uid, reason, at)
               values (?, ?, ?, ?, ?, ?)""",
            [measurement_id, collector, status, uid, reason or None, utc_now()],
        )


def upload(
    db: Database,
    path: Path,
    client: Client,
    *,
    vantage_name: str | None = None,
    batch_size: int = 100,
    retry_refused: bool = False,
    progress: Callable[[Uploaded], None] | None = None,
) -> Uploaded:
    """Upload every measurement waiting (see the module docstring). Raises
    :class:`UploadError` (the token, or the collector unreachable: what was accepted until
    then is recorded) and :class:`Busy` when another upload of this database is running."""
    done = Uploaded()
    with file_lock(lock_path(path, "upload"), wait=0, note={"since": utc_now()}):
        report: str | None = None
        template: tuple[Any, ...] = ()
        in_report = 0
        try:
            for measurement_id in _todo(db, client.url, retry_refused):
                content = export_measurement(db, measurement_id, vantage_name)
                key = (content["probe_asn"], content["probe_cc"], content["test_start_time"])
                if report is None or key != template or in_report >= batch_size:
                    if report is not None:
                        client.close_report(report)
                    report, template, in_report = client.open_report(content), key, 0
                content["report_id"] = report
                response = client.post(f"/report/{report}", {"format": "json", "content": content})
                in_report += 1
                if response.status_code == 404:  # the collector lost the report: a new one
                    report = client.open_report(content)
                    content["report_id"] = report
                    response = client.post(
                        f"/report/{report}", {"format": "json", "content": content}
                    )
                if response.status_code == 200:
                    uid = _json(response).get("measurement_uid")
                    _record(db, measurement_id, client.url, "accepted", uid, "")
                    if (_json(response).get("x_status")) == "present":
                        done.present += 1
                    else:
                        done.accepted += 1
                elif response.status_code in REFUSED:
                    reason = _reason(response)
                    _record(db, measurement_id, client.url, "refused", None, reason)
                    done.refused.append((measurement_id, reason))
                else:
                    raise UploadError(
                        f"unexpected answer from the collector: HTTP {response.status_code}"
                    )
                if progress is not None:
                    progress(done)
            if report is not None:
                client.close_report(report)
        finally:
            done.pending = pending(db, client.url)
    return done


__all__ = ["Busy", "Client", "Uploaded", "collector_url", "pending", "upload"]
