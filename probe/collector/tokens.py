"""Volunteers' tokens: made once, shown once, stored as a hash, revocable.

A token is 256 random bits (``secrets``), so its SHA-256 is all the collector keeps: a
leaked database gives no token back, and no slow password hash is needed (there is nothing
guessable to brute-force). Names are the NGO's labels for its volunteers ("bishkek-elcat-1"),
never addresses.
"""

from __future__ import annotations

import hashlib
import re
import secrets
from dataclasses import dataclass

import psycopg

from ..errors import InputError

PREFIX = "pvt_"
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.@-]{0,63}$")
_TOKEN = re.compile(r"^pvt_[A-Za-z0-9_-]{43}$")


def token_hash(token: str) -> bytes:
    return hashlib.sha256(token.encode("utf-8")).digest()


def well_formed(token: str) -> bool:
    return bool(_TOKEN.match(token))


def check_name(name: str) -> str:
    if not _NAME.match(name):
        raise InputError(
            f"{name!r}: a volunteer's name is 1-64 letters, digits and . _ @ - "
            "(a label, never an address)"
        )
    return name


def add_volunteer(conn: psycopg.Connection, name: str) -> str:
    """A new volunteer and their token (returned once: only its hash is kept)."""
    check_name(name)
    token = PREFIX + secrets.token_urlsafe(32)
    try:
        conn.execute(
            "insert into volunteers (name, token_sha256) values (%s, %s)",
            [name, token_hash(token)],
        )
    except psycopg.errors.UniqueViolation:
        raise InputError(f"{name!r}: a volunteer of this name exists already") from None
    return token


def revoke(conn: psycopg.Connection, name: str) -> bool:
    """Revoke the volunteer's token at once; False when no such (unrevoked) volunteer."""
    cursor = conn.execute(
        "update volunteers set revoked_at = now() where name = %s and revoked_at is null",
        [name],
    )
    return cursor.rowcount == 1


@dataclass(frozen=True, slots=True)
class Volunteer:
    name: str
    created_at: str
    revoked_at: str | None
    measurements: int
    #: (AS, country, reports opened) it reported from, most reports first: one token
    #: claiming many networks is worth a look.
    networks: list[tuple[str, str, int]]


def volunteers(conn: psycopg.Connection) -> list[Volunteer]:
    rows = conn.execute(
        """select v.name, to_char(v.created_at at time zone 'UTC', 'YYYY-MM-DD HH24:MI:SS'),
                  to_char(v.revoked_at at time zone 'UTC', 'YYYY-MM-DD HH24:MI:SS'),
                  coalesce(c.n, 0),
                  coalesce((select json_agg(json_build_array(n.probe_asn, n.probe_cc, n.reports)
                                            order by n.reports desc, n.last_report_at desc)
                            from volunteer_networks n where n.volunteer_id = v.id), '[]')
           from volunteers v
           left join (select volunteer_id, count(*) as n from measurements group by 1) c
             on c.volunteer_id = v.id
           order by v.name"""
    )
    return [
        Volunteer(name, created, revoked, int(count), [(n[0], n[1], int(n[2])) for n in networks])
        for name, created, revoked, count, networks in rows
    ]
