"""The collector's PostgreSQL schema: created and migrated by the collector itself.

:func:`migrate` applies the steps of :data:`STEPS` not yet recorded in ``schema_steps``, in
order, each in its own transaction, under an advisory lock (two collectors starting at once
migrate one after the other). A database with a step this collector does not know was
migrated by a newer collector: it is refused rather than written with an older idea of it.

Tables:

* ``volunteers``: who may upload. Only the SHA-256 of a token is stored (tokens are 256
  random bits, so a fast hash is enough: nothing to brute-force); ``revoked_at`` ends it.
  Never an address: the collector neither stores nor logs where a request came from.
* ``reports``: OONI's reports (one per upload batch of a run), each opened by a volunteer.
* ``measurements``: one row per measurement, **partitioned by month** of
  ``measurement_start_time`` (:func:`ensure_partitions` creates a month's partition when its
  first measurement arrives). Why by month: every reader asks for a time range (timelines
  ``--since``/``--until``, the newest weeks), which then reads only its months; retention
  is ``DROP TABLE`` of a month, not a DELETE of millions of rows; VACUUM and index builds
  stay per month; and at 100x the volume a month is still a few GB (see the README).
  The primary key is (``id``, ``start_time``): PostgreSQL wants the partition key in every
  unique key. ``id`` is the probe's measurement id (a UUID made where it was measured; for
  OONI's own measurements, one derived from OONI's identity of it). ``vantage_id`` is the
  volunteer's (``volunteer-N``: one token, one vantage), whatever the sender called it.
  The verdict columns are *our* analysis of the observations, done on arrival; what the
  sender said is kept aside (``submitted_verdict``) and so is the measurement as received
  (``content``, OONI's JSON, compressed by PostgreSQL; scrubbed of the uploader's address).
* ``measurement_ids``: who owns each id (the first volunteer who sent it), whatever start
  time a copy claims: the partitioned key alone would take another volunteer's id again with
  another start time. A resubmission, through any report, adds nothing; another volunteer's
  copy is a 409.
* ``volunteer_networks``: the networks (AS, country, as the probe said) each volunteer opened
  reports from, with the first and last report: a token claiming many networks shows.
"""

from __future__ import annotations

import datetime
from collections.abc import Iterable

import psycopg

from ..errors import CollectorDatabaseError

#: Advisory lock keys (arbitrary, fixed): migrating, and creating partitions.
MIGRATE_LOCK = 0x70726F6265_01
PARTITION_LOCK = 0x70726F6265_02

STEPS: list[tuple[str, str]] = [
    (
        "c001_initial",
        """
        create table volunteers (
            id bigint generated always as identity primary key,
            name text not null unique,
            token_sha256 bytea not null unique,
            created_at timestamptz not null default now(),
            revoked_at timestamptz
        );
        create table reports (
            report_id text primary key,
            volunteer_id bigint not null references volunteers(id),
            probe_asn text,
            probe_cc text,
            test_name text not null,
            test_version text not null,
            software_name text not null,
            software_version text not null,
            test_start_time timestamptz,
            opened_at timestamptz not null default now(),
            closed_at timestamptz
        );
        create table measurements (
            id text not null,
            start_time timestamptz not null,
            measurement_uid text not null,
            received_at timestamptz not null default now(),
            report_id text not null,
            volunteer_id bigint not null,
            vantage_id text,
            run_id text not null,
            probe_asn text,
            probe_cc text,
            probe_network_name text,
            input text not null,
            url text not null,
            domain text not null,
            category text,
            verdict text not null,
            blocking text,
            accessible boolean,
            dns_consistency text,
            failure text,
            blockpage text,
            confirmed boolean not null,
            reason text not null,
            evidence json not null,  -- json, not jsonb: kept as written (key order too)
            analysis_version text not null,
            submitted_verdict jsonb not null,
            content text not null,
            primary key (id, start_time)
        ) partition by range (start_time);
        -- the timeline's order, each (network, domain) in time order, holding every column
        -- it reads: an index-only scan, no row read
        create index measurements_timeline on measurements (probe_asn, domain, start_time)
            include (verdict, blocking, failure, blockpage, vantage_id, run_id, id);
        create index measurements_received on measurements (received_at);
        """,
    ),
    (
        "c002_one_owner_per_id",
        """
        -- A measurement id belongs to the first volunteer who sent it, whatever start time
        -- a later copy claims (measurements' key must hold the partition column).
        create table measurement_ids (
            id text primary key,
            volunteer_id bigint not null references volunteers(id),
            measurement_uid text not null
        );
        insert into measurement_ids (id, volunteer_id, measurement_uid)
            select distinct on (id) id, volunteer_id, measurement_uid
            from measurements order by id, received_at, start_time;
        -- A volunteer's vantage is its token: what a sender called its vantage is replaced.
        update measurements set vantage_id = 'volunteer-' || volunteer_id
            where vantage_id is distinct from 'volunteer-' || volunteer_id;
        -- The networks each volunteer reported from (as opened: AS0/ZZ when unknown).
        create table volunteer_networks (
            volunteer_id bigint not null references volunteers(id),
            probe_asn text not null,
            probe_cc text not null,
            first_report_at timestamptz not null,
            last_report_at timestamptz not null,
            reports bigint not null,
            primary key (volunteer_id, probe_asn, probe_cc)
        );
        insert into volunteer_networks
            select volunteer_id, coalesce(probe_asn, 'AS0'), coalesce(probe_cc, 'ZZ'),
                   min(opened_at), max(opened_at), count(*)
            from reports group by 1, 2, 3;
        """,
    ),
    (
        "c003_one_copy_per_id",
        """
        -- Copies of an id stored before c002 (another volunteer's, with another start time:
        -- another vantage in the timelines) are what c002's 409 now refuses: only the
        -- owner's copy stays, as if they had arrived under today's rules.
        delete from measurements m using measurement_ids o
            where m.id = o.id
              and (m.measurement_uid <> o.measurement_uid or m.volunteer_id <> o.volunteer_id);
        """,
    ),
    (
        "c004_timelines_per_url",
        """
        -- The unit of a timeline is the URL measured (http:// and https:// of one domain
        -- apart), ties of one second in the order measured: the run, then the target's
        -- place in it (our export's x_probe_position; 0 for measurements stored before).
        alter table measurements add column position integer not null default 0;
        drop index measurements_timeline;
        create index measurements_timeline
            on measurements (probe_asn, url, start_time, run_id, position)
            include (domain, verdict, blocking, failure, blockpage, vantage_id, id);
        """,
    ),
]


def _lz4(conn: psycopg.Connection) -> None:
    """Compress the stored measurements with lz4 where the server has it (fast on arrival)."""
    try:
        with conn.transaction():
            conn.execute("alter table measurements alter column content set compression lz4")
    except psycopg.errors.FeatureNotSupported:
        pass


def migrate(conn: psycopg.Connection) -> list[str]:
    """Apply the pending steps (autocommit connection); the names applied."""
    applied: list[str] = []
    conn.execute("select pg_advisory_lock(%s)", [MIGRATE_LOCK])
    try:
        conn.execute(
            "create table if not exists schema_steps "
            "(name text primary key, applied_at timestamptz not null default now())"
        )
        done = [row[0] for row in conn.execute("select name from schema_steps order by name")]
        known = {name for name, _ in STEPS}
        newer = [name for name in done if name not in known]
        if newer:
            raise CollectorDatabaseError(
                f"the database was migrated by a newer collector (schema step {newer[-1]}); "
                "upgrade probe to serve it"
            )
        for name, sql in STEPS:
            if name in done:
                continue
            with conn.transaction():
                conn.execute(sql.encode())
                conn.execute("insert into schema_steps (name) values (%s)", [name])
            if name == "c001_initial":
                _lz4(conn)
            applied.append(name)
    finally:
        conn.execute("select pg_advisory_unlock(%s)", [MIGRATE_LOCK])
    return applied


def month_of(t: datetime.datetime) -> datetime.date:
    return datetime.date(t.year, t.month, 1)


def partition_name(month: datetime.date) -> str:
    return f"measurements_{month.year:04d}_{month.month:02d}"


def _next_month(month: datetime.date) -> datetime.date:
    return datetime.date(month.year + month.month // 12, month.month % 12 + 1, 1)


def existing_partitions(conn: psycopg.Connection) -> set[str]:
    rows = conn.execute(
        "select c.relname from pg_inherits i join pg_class c on c.oid = i.inhrelid "
        "where i.inhparent = 'measurements'::regclass"
    )
    return {row[0] for row in rows}


def ensure_partitions(conn: psycopg.Connection, months: Iterable[datetime.date]) -> None:
    """Create the monthly partitions of ``months`` that do not exist (autocommit connection;
    safe when several collectors do it at once)."""
    wanted = sorted(set(months))
    if not wanted:
        return
    with conn.transaction():
        conn.execute("select pg_advisory_xact_lock(%s)", [PARTITION_LOCK])
        have = existing_partitions(conn)
        for month in wanted:
            name = partition_name(month)
            if name in have:
                continue
            conn.execute(
                f"create table {name} partition of measurements "
                f"for values from ('{month.isoformat()} 00:00:00+00') "
                f"to ('{_next_month(month).isoformat()} 00:00:00+00')".encode()
            )


def connect(dsn: str) -> psycopg.Connection:
    """An autocommit connection; raises :class:`CollectorDatabaseError` with the reason."""
    try:
        return psycopg.connect(dsn, autocommit=True)
    except psycopg.Error as exc:
        raise CollectorDatabaseError(
            f"cannot connect to the database: {_first_line(exc)}"
        ) from None


def _first_line(exc: BaseException) -> str:
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0]
