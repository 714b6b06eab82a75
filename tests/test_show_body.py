"""`probe show ID --body`: the stored page of a hop, byte for byte, never raw on a terminal when
it would act on it; ``http_requests.body_text`` and the ``http_bodies`` view (m070) for
Datasette, written by the store and back-filled for an older database.

Measurements are stored without the network (Store.save of made-up observations), except the
gzip page, fetched from a loopback server to see what the store keeps of a coded page.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import os
import pty
import subprocess
import sys
import uuid
import zlib
from pathlib import Path

import pytest
from click.testing import CliRunner
from sqlite_utils import Database

from probe.cli import cli
from probe.model.records import Control, HTTPRequest, Observations, Verdict
from probe.store import Store, open_db
from probe.store.merge import merge
from probe.store.schema import STORED_BODY_BYTES, migrations
from tests.loopback import page
from tests.test_core_measure import measure, settings_for

ROOT = Path(__file__).resolve().parents[1]
BINARY = bytes(range(256)) * 3 + b"\r\n\x00 the end"
CYRILLIC = "<html><head><title>Доступ ограничен</title></head><body>Сайт заблокирован</body></html>"
HOSTILE = b"<title>x</title>\x1b]0;pwned\x07\x1b[2J\x9b31m\xe2\x80\xae gpj.exe"
CP1251 = "text/html; charset=windows-1251"
KOI8 = "text/html; charset=koi8-r"


def observations(*hops: HTTPRequest, url: str = "http://24.kg/") -> Observations:
    return Observations(input=url, url=url, domain="24.kg", category="NEWS",
                        start_time="2026-11-29 12:00:00", runtime=1.0, http=list(hops),
                        control=Control())  # fmt: skip


def hop(body: bytes | None, content_type: str = "text/html", **fields) -> HTTPRequest:
    values = {
        "url": "http://24.kg/",
        "status_code": 200,
        "headers": [["Content-Type", content_type]],
        "body": body,
        "body_length": None if body is None else len(body),
        "body_sha256": None if body is None else hashlib.sha256(body).hexdigest(),
    } | fields
    return HTTPRequest(**values)


def save(db: Database, obs: Observations, verdict: str = "blocked") -> str:
    store = Store(db)
    run_id = store.start_run(inputs=[], settings={}, targets=1)
    blocking = "http-diff" if verdict == "blocked" else None
    return store.save(run_id, obs, Verdict(verdict, blocking))  # type: ignore[arg-type]


def show(db_path: Path, *args: str) -> object:
    return CliRunner().invoke(cli, ["show", *args, "--db", str(db_path)])


@pytest.fixture
def stored(tmp_path):
    """A database with: a redirect to a binary page, a windows-1251 page, a hostile page, an
    accessible HTTPS page (no body kept), and a failed fetch."""
    path = tmp_path / "p.db"
    db = open_db(path)
    ids = {
        "binary": save(db, observations(
            hop(b"", status_code=302, location="http://24.kg/x"),
            hop(BINARY, "application/octet-stream", url="http://24.kg/x"),
        )),
        "cp1251": save(db, observations(hop(CYRILLIC.encode("cp1251"), CP1251))),
        "hostile": save(db, observations(hop(HOSTILE))),
        "https": save(db, observations(hop(b"<title>ok</title>", url="https://24.kg/"),
                                       url="https://24.kg/"), "accessible"),
        "failed": save(db, observations(hop(None, status_code=None,
                                            failure="connection_reset"))),
    }  # fmt: skip
    db.conn.close()
    return path, ids


def test_the_body_comes_back_byte_for_byte_to_a_pipe_and_a_file(stored, tmp_path):
    path, ids = stored
    result = show(path, ids["binary"], "--body")
    assert result.exit_code == 0, result.output
    assert result.stdout_bytes == BINARY  # the last hop with a page, not the 302's empty one
    out = tmp_path / "page.bin"
    result = show(path, ids["binary"][:8], "--body", "--hop", "1", "-o", str(out))
    assert result.exit_code == 0, result.output
    assert out.read_bytes() == BINARY and result.stdout_bytes == b""
    empty = show(path, ids["binary"], "--body", "--hop", "0")
    assert empty.exit_code == 0 and empty.stdout_bytes == b""  # the 302's body: empty, stored


def test_a_stored_prefix_is_written_and_said_to_be_one(tmp_path):
    db = open_db(tmp_path / "p.db")
    big = b"<html>" + os.urandom(STORED_BODY_BYTES)
    mid = save(db, observations(hop(big)))
    result = CliRunner().invoke(cli, ["show", mid, "--body", "--db", str(tmp_path / "p.db")])
    assert result.exit_code == 0
    assert result.stdout_bytes == big[:STORED_BODY_BYTES]
    assert f"Only the first {STORED_BODY_BYTES} bytes" in result.stderr


@pytest.mark.asyncio
async def test_a_gzip_served_page_is_stored_and_written_decoded(loopback, tmp_path):
    text = "<html><head><title>Сжатая</title></head><body>" + "новости " * 500 + "</body>"
    served = gzip.compress(text.encode())
    web = loopback.http({"/": page(served, Content_Encoding="gzip")})
    dns = loopback.dns({"gzip.test": [web.host]})
    obs = await measure(settings_for(loopback, dns, web), web.url("/", "gzip.test"))
    [fetched] = obs.http
    assert fetched.failure is None and fetched.body == text.encode()  # decoded as it came
    db = open_db(tmp_path / "p.db")
    mid = save(db, obs, "accessible")
    result = CliRunner().invoke(cli, ["show", mid, "--body", "--db", str(tmp_path / "p.db")])
    assert result.exit_code == 0, result.output
    assert result.stdout_bytes == text.encode() != served
    [(stored_text,)] = db.execute("select body_text from http_bodies").fetchall()
    assert stored_text == text


def test_text_decodes_a_windows_1251_page(stored):
    path, ids = stored
    raw = show(path, ids["cp1251"], "--body")
    assert raw.stdout_bytes == CYRILLIC.encode("cp1251")  # the bytes as the server sent them
    result = show(path, ids["cp1251"], "--body", "--text")
    assert result.exit_code == 0, result.output
    assert result.stdout_bytes.decode("utf-8") == CYRILLIC


def test_the_json_record_has_each_hops_body_facts_not_the_body(stored):
    path, ids = stored
    result = show(path, ids["binary"], "--json")
    assert result.exit_code == 0, result.output
    hops = json.loads(result.output)["steps"]["http_requests"]
    assert [(h["body_stored"], h["body_stored_length"]) for h in hops] == [
        (True, 0),
        (True, len(BINARY)),
    ]
    assert hops[1]["body_sha256"] == hashlib.sha256(BINARY).hexdigest()
    assert hops[1]["body_length"] == len(BINARY)
    assert not {"body", "body_text"} & set(hops[1])
    https = json.loads(show(path, ids["https"], "--json").output)["steps"]["http_requests"]
    assert https[0]["body_stored"] is False and https[0]["body_stored_length"] is None
    assert https[0]["body_length"] == len(b"<title>ok</title>")


def test_unknown_ids_and_pages_not_stored_are_one_line_exit_2(stored):
    path, ids = stored
    cases = {
        "0123456789ab": "no run or measurement with this id",
        ids["https"]: "an HTTPS page of a measurement found accessible is not kept",
        ids["failed"]: "it failed (connection_reset) before a page came",
    }
    for ident, why in cases.items():
        result = show(path, ident, "--body")
        assert result.exit_code == 2, (ident, result.output)
        assert why in result.stderr and result.stderr.count("\n") == 1, result.stderr
        assert result.stdout_bytes == b""
    result = show(path, ids["binary"], "--body", "--hop", "7")
    assert result.exit_code == 2 and "no hop 7" in result.stderr
    run = CliRunner().invoke(cli, ["runs", "--db", str(path), "--json"])
    run_id = json.loads(run.output.splitlines()[0])["id"]
    assert show(path, run_id, "--body").exit_code == 2
    assert show(path, ids["binary"], "--text").exit_code == 2  # --text goes with --body


def on_a_terminal(db_path: Path, *args: str) -> tuple[int, bytes, str]:
    """``probe show ARGS`` with its standard output a pseudo-terminal: what the terminal got,
    and the exit status and standard error."""
    master, slave = pty.openpty()
    try:
        process = subprocess.Popen(
            [sys.executable, "-m", "probe", "show", *args, "--db", str(db_path)],
            stdout=slave, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL, cwd=ROOT,
        )  # fmt: skip
        os.close(slave)
        slave = -1
        got = b""
        while True:
            try:
                chunk = os.read(master, 65536)
            except OSError:  # EIO: the process closed its side
                break
            if not chunk:
                break
            got += chunk
        _, err = process.communicate(timeout=60)
        return process.returncode, got, err.decode()
    finally:
        os.close(master)
        if slave >= 0:
            os.close(slave)


def test_a_page_with_escape_sequences_is_never_written_raw_to_a_terminal(stored):
    path, ids = stored
    for name in ("hostile", "binary", "cp1251"):
        status, got, err = on_a_terminal(path, ids[name], "--body")
        assert status == 2 and got == b"", (name, got)
        assert "-o FILE" in err and "--text" in err
    status, got, err = on_a_terminal(path, ids["hostile"], "--body", "--text")
    assert status == 0, err
    assert b"\x1b" not in got and b"\x07" not in got and "\u202e".encode() not in got
    assert b"\\x1b]0;pwned\\x07\\x1b[2J" in got and b"\\u202e gpj.exe" in got
    # Plain UTF-8 text with nothing to act on is written to the terminal as it is.
    status, got, _ = on_a_terminal(path, ids["binary"], "--body", "--hop", "0")
    assert status == 0 and got == b""
    status, got, _ = on_a_terminal(path, ids["cp1251"], "--body", "--text")
    assert status == 0 and "Доступ ограничен" in got.decode()


def test_body_text_is_the_text_for_any_bytes(tmp_path):
    db = open_db(tmp_path / "p.db")
    nul = b"<p>a\x00b</p>"
    surrogates = b"x\xed\xa0\x80y"  # a UTF-8-encoded lone surrogate
    utf16 = b"\xff\xfe" + "<p>ok".encode("utf-16-le") + b"\x00\xd8"  # a lone high surrogate
    mid = save(db, observations(hop(nul), hop(surrogates), hop(utf16), hop(HOSTILE)))
    sql = "select body_text from http_bodies where measurement_id = ? order by hop"
    texts = [row[0] for row in db.execute(sql, [mid])]
    assert texts[0] == "<p>a\ufffdb</p>"
    assert texts[1] == "x\ufffd\ufffd\ufffdy"
    assert texts[2] == "<p>ok\ufffd"
    assert texts[3] == HOSTILE.decode("utf-8", "replace")  # the text, not escaped for display
    assert all(t.encode("utf-8") for t in texts)


def old_database(path: Path) -> list[tuple[bytes, str | None, str]]:
    """A database as the probe before m070 left it, with pages stored every way it stored them
    (raw before m004, zlib after, a damaged one); the rows' (body, body_encoding, headers)."""
    db = Database(path)
    migrations.apply(db, stop_before="m070_body_text")
    db.execute("insert into runs (id, started_at, status) values ('r1', '2026-01-01', 'complete')")
    rows = [
        (zlib.compress(CYRILLIC.encode("cp1251")), "zlib", json.dumps([["Content-Type", CP1251]])),
        (CYRILLIC.encode("koi8-r"), None, json.dumps([["content-type", KOI8]])),
        (b"not zlib at all", "zlib", "[]"),
        (zlib.compress(b"a\x00b"), "zlib", "not json"),
    ]  # fmt: skip
    ids = []
    for n, (body, encoding, headers) in enumerate(rows):
        mid = str(uuid.uuid4())
        ids.append(mid)
        db.execute("insert into measurements (id, run_id, input, url, start_time, verdict) "
                   "values (?, 'r1', 'http://24.kg/', 'http://24.kg/', '2026-01-01', 'blocked')",
                   [mid])  # fmt: skip
        db.execute(
            "insert into http_requests (measurement_id, hop, url, status_code, headers, title, "
            "body_length, body, body_encoding) values (?, 0, 'http://24.kg/', 200, ?, ?, ?, ?, ?)",
            [mid, headers, f"t{n}", len(body), body, encoding],
        )
    db.execute(
        "insert into http_requests (measurement_id, hop, url, status_code, body) "
        "values (?, 1, 'https://24.kg/', 200, null)",
        [ids[0]],
    )
    db.conn.commit()
    db.conn.close()
    return rows


EXPECTED = [CYRILLIC, CYRILLIC, None, "a\ufffdb"]


def test_the_migration_back_fills_an_old_database_and_the_view_shows_the_text(tmp_path):
    path = tmp_path / "old.db"
    old_database(path)
    db = open_db(path)
    got = db.execute("select title, body_text from http_requests order by title").fetchall()
    assert got == [(None, None), *((f"t{n}", text) for n, text in enumerate(EXPECTED))]
    view = db.execute("select hop, title, body_text from http_bodies order by title").fetchall()
    assert view == [(0, f"t{n}", text) for n, text in enumerate(EXPECTED)]  # stored pages only
    columns = [row[1] for row in db.execute("pragma table_info(http_bodies)")]
    assert columns == ["measurement_id", "hop", "url", "status_code", "title", "body_length",
                       "body_sha256", "body_text"]  # fmt: skip


def test_a_merged_old_database_gets_its_pages_text(tmp_path):
    old = tmp_path / "old.db"
    old_database(old)
    db = open_db(tmp_path / "mine.db")
    merge(db, old)
    got = db.execute("select title, body_text from http_bodies order by title").fetchall()
    assert got == [(f"t{n}", text) for n, text in enumerate(EXPECTED)]
