"""The SQLite schema: every step, in the one order a database goes through them.

Each step is a function applied once (sqlite-utils Migrations, recorded in
``_sqlite_migrations``); :data:`STEPS` lists them in order, so a new database and an old one
upgraded step by step end with the same schema. Steps are never edited or reordered once
released: a change is a new step at the end.
"""

from __future__ import annotations

import hashlib
import json
import re
import uuid
import zlib

from sqlite_utils import Database
from sqlite_utils.migrations import Migrations

from ..model.charset import charset_of, decode_text
from ..model.records import utc_now


def derived_vantage(first_run_id: str) -> str:
    """The vantage id of a database written before vantages existed, from its first run."""
    return "db-" + hashlib.sha256(first_run_id.encode()).hexdigest()[:24]


def m001_initial(db: Database) -> None:
    db.table("runs").create(
        {
            "id": str,
            "started_at": str,  # UTC "YYYY-MM-DD HH:MM:SS"
            "finished_at": str,
            "status": str,  # running | complete | interrupted
            "software_version": str,
            "probe_asn": str,  # "AS12345": the network, never the volunteer's address
            "probe_cc": str,
            "inputs": str,  # JSON list of target files / --input URLs
            "settings": str,  # JSON: resolvers, helpers, timeouts
            "offline": int,
            "targets": int,
            "counts": str,  # JSON {verdict: count}
        },
        pk="id",
    )
    db.table("measurements").create(
        {
            "id": str,
            "run_id": str,
            "position": int,  # the target's place in the run's input order
            "input": str,
            "url": str,
            "domain": str,
            "category": str,
            "start_time": str,
            "runtime": float,
            "probe_asn": str,
            "probe_cc": str,
            "verdict": str,
            "blocking": str,
            "accessible": int,
            "dns_consistency": str,
            "failure": str,
            "blockpage": str,
            "confirmed": int,
            "reason": str,
            "body_proportion": float,
            "body_length_match": int,
            "status_code_match": int,
            "headers_match": int,
            "title_match": int,
            "software_version": str,
        },
        pk="id",
        foreign_keys=[("run_id", "runs", "id")],
    )
    db.table("measurements").create_index(["domain", "start_time"])
    db.table("measurements").create_index(["probe_asn", "domain", "start_time"])
    db.table("measurements").create_index(["run_id"])
    step = {"measurement_id": str, "depth": int, "t0": float, "t": float}
    db.table("dns_queries").create(
        {
            **step,
            "hostname": str,
            "query_type": str,
            "engine": str,
            "resolver": str,
            "failure": str,
            "rcode": str,
            "addresses": str,  # JSON list
            "cnames": str,  # JSON list
            "ttl": int,
        },
        foreign_keys=[("measurement_id", "measurements", "id")],
    )
    db.table("tcp_connects").create(
        {**step, "ip": str, "port": int, "failure": str},
        foreign_keys=[("measurement_id", "measurements", "id")],
    )
    db.table("tls_handshakes").create(
        {
            **step,
            "ip": str,
            "port": int,
            "server_name": str,
            "failure": str,
            "tls_version": str,
            "cipher": str,
            "alpn": str,
            "cert_sha256": str,
            "cert_subject": str,
            "cert_issuer": str,
            "purpose": str,
        },
        foreign_keys=[("measurement_id", "measurements", "id")],
    )
    db.table("http_requests").create(
        {
            **step,
            "hop": int,
            "url": str,
            "method": str,
            "ip": str,
            "port": int,
            "failure": str,
            "status_code": int,
            "headers": str,  # JSON [[name, value], ...]
            "title": str,
            "body_length": int,
            "body_sha256": str,
            "body_truncated": int,
            "location": str,
            "body": bytes,  # the evidence; see _stored_body and body_encoding (m004)
        },
        foreign_keys=[("measurement_id", "measurements", "id")],
    )
    db.table("controls").create(
        {
            "measurement_id": str,
            "helper": str,
            "failure": str,
            "response": str,  # the helper's JSON answer, verbatim
            "t0": float,
            "t": float,
        },
        pk="measurement_id",
        foreign_keys=[("measurement_id", "measurements", "id")],
    )
    for table in ("dns_queries", "tcp_connects", "tls_handshakes", "http_requests"):
        db.table(table).create_index(["measurement_id"])


def m002_duplicate_replies_informational_raw(db: Database) -> None:
    db.table("dns_queries").add_column("duplicate_replies", str)  # JSON list
    db.table("http_requests").add_column("informational", str)  # JSON list of 1xx codes
    db.table("http_requests").add_column("raw", bytes)  # first bytes of an unparsable reply


def m003_evidence(db: Database) -> None:
    db.table("measurements").add_column("evidence", str)  # JSON list of Evidence


def m004_compressed_bodies_and_reanalyses(db: Database) -> None:
    # "zlib": ``body`` holds the first STORED_BODY_BYTES of the body, zlib-compressed;
    # NULL: ``body`` is raw (rows written before this migration) or absent.
    db.table("http_requests").add_column("body_encoding", str)
    db.table("reanalyses").create(
        {
            "measurement_id": str,
            "at": str,  # UTC "YYYY-MM-DD HH:MM:SS"
            "software_version": str,
            "before": str,  # JSON: the verdict fields replaced
            "after": str,  # JSON: the verdict fields written
        },
        foreign_keys=[("measurement_id", "measurements", "id")],
    )
    db.table("reanalyses").create_index(["measurement_id"])


def m010_network_identity(db: Database) -> None:
    # The network a run measured from (probe.app.identity), beside probe_asn/probe_cc:
    # names and the resolver's AS; never an address of the volunteer's.
    runs = db.table("runs")
    runs.add_column("probe_network_name", str)
    runs.add_column("resolver_ip", str)  # the configured resolver, only when a public address
    runs.add_column("resolver_asn", str)
    runs.add_column("resolver_network_name", str)
    runs.add_column("identity_source", str)  # lookup | override | lookup+override | NULL


def m020_local_results(db: Database) -> None:
    # probe runs/status/prune on a million measurements: runs by time, measurements by time;
    # "pruned" marks a measurement whose observations were dropped (never re-analysed).
    db.table("runs").create_index(["started_at"])
    db.table("measurements").create_index(["start_time"])
    db.table("measurements").add_column("pruned", int, not_null_default=0)


def m030_uploads(db: Database) -> None:
    # probe upload: per collector, each measurement it accepted (its uid) or refused for
    # good (the reason); a measurement with no row here waits for upload.
    db.table("uploads").create(
        {
            "measurement_id": str,
            "collector": str,  # the collector's base URL
            "status": str,  # accepted | refused
            "measurement_uid": str,
            "reason": str,
            "at": str,  # UTC "YYYY-MM-DD HH:MM:SS"
        },
        pk=("measurement_id", "collector"),
    )


def m040_dns_addresses_total(db: Database) -> None:
    # How many addresses a DNS answer held: ``addresses`` keeps at most 64 of them
    # (probe.net.resolvers.MAX_ADDRESSES). NULL: not counted (rows stored before this).
    db.table("dns_queries").add_column("addresses_total", int)


def m005_vantages(db: Database) -> None:
    db.table("vantages").create(
        {
            "id": str,
            "name": str,  # the volunteer's name for it (config `vantage`), never an address
            "kind": str,  # local | remote | ooni
            "added_at": str,  # UTC "YYYY-MM-DD HH:MM:SS"
        },
        pk="id",
    )
    db.execute("create unique index vantages_one_local on vantages(kind) where kind = 'local'")
    # A database that already has runs gets the id a merge gives it before this step
    # (derived from its first run), so it stays one vantage when merged before and after.
    first = db.execute("select id from runs order by started_at, id limit 1").fetchone()
    local = derived_vantage(first[0]) if first else str(uuid.uuid4())
    db.table("vantages").insert({"id": local, "kind": "local", "added_at": utc_now()})
    db.table("runs").add_column("vantage_id", str, fk="vantages", fk_col="id")
    db.execute("update runs set vantage_id = ?", [local])
    db.execute(
        """
        create trigger runs_local_vantage after insert on runs when new.vantage_id is null
        begin
            update runs set vantage_id = (select id from vantages where kind = 'local')
            where id = new.id;
        end
        """
    )
    db.table("runs").create_index(["vantage_id"])


def m006_ooni_imports(db: Database) -> None:
    db.table("ooni_imports").create(
        {
            "measurement_id": str,
            "uid": str,  # OONI's identity: measurement_uid, else report_id + input + time
            "report_id": str,
            "source": str,  # FILE:LINE it was read from
            "test_version": str,
            "software": str,  # software_name software_version
            "ooni_blocking": str,  # OONI's verdict as published (JSON), never used by us
            "ooni_accessible": str,
            "measurement": bytes,  # the measurement as published, zlib-compressed JSON
            "imported_at": str,
        },
        pk="measurement_id",
        foreign_keys=[("measurement_id", "measurements", "id")],
    )
    db.table("ooni_imports").create_index(["uid"], unique=True)


VIEWS = {
    "verdicts": """
        select m.id as measurement_id, m.start_time, m.input, m.url, m.domain, m.category,
               coalesce(m.probe_asn, r.probe_asn) as probe_asn,
               coalesce(m.probe_cc, r.probe_cc) as probe_cc,
               m.verdict, m.blocking, m.accessible, m.dns_consistency, m.failure, m.blockpage,
               m.confirmed, m.reason, m.run_id, r.started_at as run_started_at,
               r.finished_at as run_finished_at, r.status as run_status,
               r.offline as run_offline, r.vantage_id, v.name as vantage,
               v.kind as vantage_kind, m.software_version, m.pruned, m.position
        from measurements m
        left join runs r on r.id = m.run_id
        left join vantages v on v.id = r.vantage_id
    """,
    "blocked": "select * from verdicts where verdict = 'blocked'",
    "latest_verdicts": """
        select * from (
            select *, row_number() over (
                partition by url, probe_asn
                order by start_time desc, run_id desc, position desc, measurement_id desc
            ) as newest
            from verdicts
        ) where newest = 1
    """,
    "run_summaries": """
        select r.id as run_id, r.started_at, r.finished_at, r.status, r.offline, r.probe_asn,
               r.probe_cc, r.vantage_id, v.name as vantage, v.kind as vantage_kind,
               r.software_version, count(m.id) as measurements,
               coalesce(sum(m.verdict = 'accessible'), 0) as accessible,
               coalesce(sum(m.verdict = 'blocked'), 0) as blocked,
               coalesce(sum(m.verdict = 'down'), 0) as down,
               coalesce(sum(m.verdict = 'inconclusive'), 0) as inconclusive
        from runs r
        left join vantages v on v.id = r.vantage_id
        left join measurements m on m.run_id = r.id
        group by r.id
    """,
    "dns_answers": """
        select q.measurement_id, m.start_time, m.domain, m.probe_asn, q.depth, q.hostname,
               q.query_type, q.engine, q.resolver, q.failure, q.rcode, q.addresses, q.cnames,
               q.t0, q.t
        from dns_queries q join measurements m on m.id = q.measurement_id
    """,
    "tls_results": """
        select h.measurement_id, m.start_time, m.domain, m.probe_asn, h.depth, h.purpose,
               h.ip, h.port, h.server_name, h.failure, h.tls_version, h.alpn, h.cert_sha256,
               h.cert_subject, h.cert_issuer, h.t0, h.t
        from tls_handshakes h join measurements m on m.id = h.measurement_id
    """,
    "http_hops": """
        select h.measurement_id, m.start_time, m.domain, m.probe_asn, h.hop, h.depth, h.url,
               h.ip, h.port, h.failure, h.status_code, h.title, h.body_length, h.body_sha256,
               h.body_truncated, h.location, h.t0, h.t
        from http_requests h join measurements m on m.id = h.measurement_id
    """,
}


def m007_research_views(db: Database) -> None:
    # As released: the verdicts view without ``pruned`` (m020 adds the column; m050 the view's).
    for name, sql in VIEWS.items():
        if name == "verdicts":
            sql = sql.replace(", m.pruned, m.position\n", "\n")
        db.execute(f"create view {name} as {sql}")


#: The columns the timeline reads, in the order of its scan: an index holding them all lets
#: a million measurements be read from the index alone, never the rows.
TIMELINE_COLUMNS = ("probe_asn", "domain", "start_time", "verdict", "run_id", "blocking",
                    "failure", "blockpage", "id")  # fmt: skip


def m008_timeline_index(db: Database) -> None:
    db.table("measurements").create_index(
        list(TIMELINE_COLUMNS), index_name="measurements_timeline"
    )


def m050_views_again(db: Database) -> None:
    # Views as :data:`VIEWS` has them now (the verdicts view shows ``pruned``): a view holds
    # no data, so a changed view is dropped and created again by a new step like this one.
    for name in VIEWS:
        db.execute(f"drop view if exists {name}")
    for name, sql in VIEWS.items():
        db.execute(f"create view {name} as {sql}")


#: The timeline's columns per URL (m060), in the order of its scan: each (network, URL) in
#: time order, ties in the order measured (run, position), every column it reads held.
TIMELINE_COLUMNS_BY_URL = ("probe_asn", "url", "start_time", "run_id", "position", "domain",
                           "verdict", "blocking", "failure", "blockpage", "id")  # fmt: skip


def m060_timelines_per_url(db: Database) -> None:
    # The unit of a timeline is the URL measured: http:// and https:// of one domain apart
    # (a block page on cleartext while HTTPS passes is the common case). The index by domain
    # (m008) is replaced; latest_verdicts is per URL (VIEWS), ties in the order measured.
    db.execute("drop index if exists measurements_timeline")
    db.table("measurements").create_index(
        list(TIMELINE_COLUMNS_BY_URL), index_name="measurements_timeline"
    )
    for name in VIEWS:
        db.execute(f"drop view if exists {name}")
    for name, sql in VIEWS.items():
        db.execute(f"create view {name} as {sql}")


#: Bytes of a body kept for re-analysis: as much as fingerprints match (block pages are small).
STORED_BODY_BYTES = 64 * 1024

#: What no SQL or JSON store takes as text: NUL, and lone surrogates (which UTF-8 cannot encode).
_UNSTORABLE = re.compile("[\x00\ud800-\udfff]")


def body_text(body: bytes, content_type: str | None) -> str:
    """The text of a stored body (its first :data:`STORED_BODY_BYTES`), decoded with the
    page's charset (:func:`~probe.model.charset.charset_of`), as ``http_requests.body_text``
    holds it: NUL and lone surrogates become U+FFFD, as an HTML parser makes NUL; nothing
    else is escaped (the text is the evidence; what shows it escapes it)."""
    body = body[:STORED_BODY_BYTES]
    return _UNSTORABLE.sub("\ufffd", decode_text(body, charset_of(content_type, body)))


def stored_bytes(body: object, encoding: str | None) -> bytes | None:
    """The bytes a stored ``body`` holds (inflated when ``body_encoding`` is ``zlib``), or
    None when there are none or they cannot be read (a merged database's damaged row)."""
    if not isinstance(body, bytes):
        return None
    if encoding is None:
        return body
    if encoding != "zlib":
        return None
    try:
        return zlib.decompress(body)
    except zlib.error:
        return None


def stored_content_type(headers: object) -> str | None:
    """The first Content-Type of a stored ``headers`` column (JSON ``[[name, value], ...]``),
    or None (also when the column is not such a list)."""
    try:
        pairs = json.loads(headers) if isinstance(headers, str) else []
    except ValueError:
        return None
    for pair in pairs if isinstance(pairs, list) else []:
        if isinstance(pair, list) and len(pair) == 2 and str(pair[0]).lower() == "content-type":
            return str(pair[1])
    return None


def fill_body_text(db: Database) -> int:
    """Write ``body_text`` of every row with a stored body and no text yet (rows of an older
    probe, upgraded or merged); how many. A body that cannot be read keeps none."""
    filled = 0
    last = 0
    while True:
        rows = db.execute(
            "select rowid, body, body_encoding, headers from http_requests "
            "where rowid > ? and body is not null and body_text is null order by rowid limit 500",
            [last],
        ).fetchall()
        if not rows:
            return filled
        texts = []
        for rowid, body, encoding, headers in rows:
            last = rowid
            data = stored_bytes(body, encoding)
            if data is not None:
                texts.append((body_text(data, stored_content_type(headers)), rowid))
        db.conn.executemany("update http_requests set body_text = ? where rowid = ?", texts)
        filled += len(texts)


#: The stored pages as text, for Datasette (which cannot inflate ``body``): m070's view.
HTTP_BODIES = """
    select h.measurement_id, h.hop, h.url, h.status_code, h.title, h.body_length,
           h.body_sha256, h.body_text
    from http_requests h where h.body is not null
"""


def m070_body_text(db: Database) -> None:
    # ``body`` is zlib (m004), which SQLite cannot inflate: ``body_text`` is the stored body
    # decoded with the page's charset, written by the store beside the body and filled here
    # for the rows stored before, so Datasette shows pages as text (view http_bodies).
    db.table("http_requests").add_column("body_text", str)
    fill_body_text(db)
    db.execute(f"create view http_bodies as {HTTP_BODIES}")


#: Every schema step, in order.
STEPS = (
    m001_initial,
    m002_duplicate_replies_informational_raw,
    m003_evidence,
    m004_compressed_bodies_and_reanalyses,
    m005_vantages,
    m006_ooni_imports,
    m007_research_views,
    m008_timeline_index,
    m010_network_identity,
    m020_local_results,
    m030_uploads,
    m040_dns_addresses_total,
    m050_views_again,
    m060_timelines_per_url,
    m070_body_text,
)
#: Their names: a database that applied a step not named here was written by a newer probe.
NAMES = tuple(step.__name__ for step in STEPS)

migrations = Migrations("probe")
for _step in STEPS:
    migrations()(_step)
