"""`probe bundle` and `probe verify-bundle`: an evidence bundle anyone can re-check.

The database is made without a network: observations built by hand (tests/test_collector.py,
tests/test_reanalyze.py), analysed and stored by the real store. A bundle is changed the way
someone handling it could: a byte in a member (the zip rewritten, so only the manifest can
tell), a verdict in the records with the manifest recomputed, files dropped or added; and
hostile zips (not a zip, a bomb, names like ../x, a member claiming gigabytes) are refused
in one line, never extracted.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import struct
import subprocess
import sys
import zipfile
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result

from probe import __version__
from probe.analysis import analyze
from probe.analysis.fingerprints import Fingerprints
from probe.app.bundle import MANIFEST, MAX_MEMBER_BYTES
from probe.cli import cli
from probe.model.records import DNSQuery, Observations
from probe.store import Store, open_db
from tests.test_collector import observations, volunteer_db
from tests.test_reanalyze import NOTICE, notice_observations

ROOT = Path(__file__).resolve().parents[1]
#: A measurement id as a merged (hostile) database could hold it: never a path in the zip.
HOSTILE_ID = "../../etc/cron.d/x"
FINGERPRINT = [
    {
        "id": "lab.kg_notice",
        "location": "body",
        "type": "contains",
        "pattern": "ресурска кирүү чектелген",
        "scope": "isp",
    }
]


def database(tmp_path: Path) -> tuple[Path, Path]:
    """A database of two networks' runs (one domain blocked by DNS, one fine) and two ISP
    notices (cleartext, bodies stored) that only an extra fingerprint file recognises;
    the database and that file."""
    fingerprint = tmp_path / "kg.json"
    fingerprint.write_text(json.dumps(FINGERPRINT, ensure_ascii=False), encoding="utf-8")
    path = tmp_path / "probe.db"
    runs = [
        (f"2026-10-0{day} 08:00:00", {"blocked.kg": True, "fine.kg": False}) for day in (1, 2, 3)
    ]
    volunteer_db(path, "AS8449", runs)
    volunteer_db(path, "AS12345", runs[:2])
    store = Store(open_db(path))
    run = store.start_run(inputs=[], settings={}, targets=2, probe_asn="AS8449", probe_cc="KG")
    fingerprints = Fingerprints.load([fingerprint])
    for measurement_id in (None, HOSTILE_ID):
        obs = notice_observations()
        verdict = analyze(obs, fingerprints=fingerprints)
        assert verdict.blockpage == "lab.kg_notice"  # only with the extra file
        store.save(run, obs, verdict, probe_asn="AS8449", probe_cc="KG",
                   measurement_id=measurement_id)  # fmt: skip
    store.finish_run(run, status="complete", counts={}, offline=False)
    return path, fingerprint


def invoke(*args: str, env: dict[str, str] | None = None) -> Result:
    return CliRunner().invoke(cli, list(args), env=env)


def make_bundle(tmp_path: Path, *extra: str, name: str = "b.zip") -> Path:
    path, fingerprint = database(tmp_path) if not (tmp_path / "probe.db").exists() else (
        tmp_path / "probe.db", tmp_path / "kg.json")  # fmt: skip
    out = tmp_path / name
    result = invoke("bundle", "--db", str(path), "--fingerprints", str(fingerprint),
                    "-o", str(out), *extra)  # fmt: skip
    assert result.exit_code == 0, result.output
    return out


def members(path: Path) -> dict[str, bytes]:
    with zipfile.ZipFile(path) as archive:
        return {info.filename: archive.read(info) for info in archive.infolist()}


def rewrite(path: Path, contents: dict[str, bytes], *, manifest: bool = False) -> None:
    """Write ``contents`` as the zip at ``path``; with ``manifest``, MANIFEST.json is made
    again to match (as someone covering their tracks would)."""
    if manifest:
        data = json.loads(contents[MANIFEST])
        data["files"] = {
            name: {"sha256": hashlib.sha256(body).hexdigest(), "size": len(body)}
            for name, body in sorted(contents.items())
            if name != MANIFEST
        }
        contents = {**contents, MANIFEST: json.dumps(data).encode()}
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, body in contents.items():
            archive.writestr(name, body)


def verify(path: Path) -> Result:
    result = invoke("verify-bundle", str(path))
    assert "Traceback" not in result.output
    assert result.exception is None or isinstance(result.exception, SystemExit)
    return result


def records(contents: dict[str, bytes]) -> list[dict[str, Any]]:
    return [json.loads(line) for line in contents["records.jsonl"].splitlines()]


# ------------------------------------------------------------------ what a bundle holds


def test_a_bundle_holds_the_evidence_and_verifies(tmp_path):
    bundle = make_bundle(tmp_path)
    contents = members(bundle)
    manifest = json.loads(contents[MANIFEST])
    assert manifest["probe_version"] == __version__
    assert manifest["measurements"] == manifest["report_measurements"] == 12
    # Every member but the manifest is listed with its hash and size, nothing else.
    assert set(manifest["files"]) == set(contents) - {MANIFEST}
    for name, entry in manifest["files"].items():
        assert entry == {"sha256": hashlib.sha256(contents[name]).hexdigest(),
                         "size": len(contents[name])}  # fmt: skip
    # The OONI lines and our records: one each per measurement, the same ids.
    ooni = [json.loads(line) for line in contents["measurements.ooni.jsonl"].splitlines()]
    rows = records(contents)
    assert len(ooni) == len(rows) == 12
    assert all(m["test_name"] == "web_connectivity" for m in ooni)
    assert {r["measurement_id"] for r in rows} >= {HOSTILE_ID}
    verdicts = [r["verdict"]["verdict"] for r in rows]
    assert verdicts.count("blocked") == 5 + 2 and verdicts.count("accessible") == 5
    # The bodies, decompressed, as served; a hostile id never becomes a path.
    bodies = [name for name in contents if name.startswith("bodies/")]
    assert len(bodies) == 2 and all(name.endswith("/hop0.bin") for name in bodies)
    assert all(contents[name] == NOTICE.encode() for name in bodies)
    assert not any(".." in name for name in contents)
    hostile = next(r for r in rows if r["measurement_id"] == HOSTILE_ID)
    assert hostile["observations"]["http"][0]["body"] is None
    assert hostile["observations"]["http"][0]["body_file"] in bodies
    # The fingerprints in force, ours first, the extra file, Censored Planet's.
    assert manifest["fingerprints"]["ours"] == [
        "fingerprints/fingerprints.json",
        "fingerprints/extra-01-kg.json",
    ]
    assert json.loads(contents["fingerprints/extra-01-kg.json"]) == FINGERPRINT
    assert len(manifest["fingerprints"]["censoredplanet"]) == 2
    # The report, as `probe report` makes it (its generation time aside).
    report = json.loads(contents["report/report.json"])
    made = invoke("report", "--db", str(tmp_path / "probe.db"), "--format", "json")
    assert made.exit_code == 0
    expected = json.loads(made.stdout)
    report.pop("generated_at"), expected.pop("generated_at")
    assert report == expected
    assert contents["report/report.html"].startswith(b"<!DOCTYPE html>")

    result = verify(bundle)
    assert result.exit_code == 0, result.output
    assert "verdicts identical (12 measurements)" in result.output


def test_filters_choose_the_measurements_and_are_in_the_manifest(tmp_path):
    bundle = make_bundle(tmp_path, "--domain", "blocked.kg", "--asn", "as12345",
                         "--since", "2026-10-02")  # fmt: skip
    contents = members(bundle)
    manifest = json.loads(contents[MANIFEST])
    assert manifest["filters"] == {"domain": ["blocked.kg"], "asn": ["AS12345"],
                                   "since": "2026-10-02"}  # fmt: skip
    rows = records(contents)
    assert [(r["observations"]["domain"], r["probe_asn"]) for r in rows] == [
        ("blocked.kg", "AS12345")
    ]
    assert json.loads(contents["report/report.json"])["measurements"] == 1
    assert verify(bundle).exit_code == 0


def test_the_same_data_gives_the_same_bytes(tmp_path):
    env = {"SOURCE_DATE_EPOCH": "1790000000"}
    first = make_bundle(tmp_path, name="one.zip")
    again = tmp_path / "two.zip"
    for out in (first, again):
        result = invoke("bundle", "--db", str(tmp_path / "probe.db"), "--fingerprints",
                        str(tmp_path / "kg.json"), "-o", str(out), env=env)  # fmt: skip
        assert result.exit_code == 0, result.output
    assert first.read_bytes() == again.read_bytes()
    with zipfile.ZipFile(first) as archive:
        names = archive.namelist()
        assert names == sorted(names)
        assert {info.date_time for info in archive.infolist()} == {(1980, 1, 1, 0, 0, 0)}
    assert json.loads(members(first)[MANIFEST])["generated_at"] == "2026-09-21T14:13:20Z"
    # Without it, the report's date is now: only the report and the manifest differ.
    now = members(make_bundle(tmp_path, name="now.zip"))
    fixed = members(first)
    assert {n for n in fixed if fixed[n] != now[n]} <= {MANIFEST, "report/report.html",
                                                         "report/report.json"}  # fmt: skip


# ------------------------------------------------------------------ a bundle changed


@pytest.fixture(scope="module")
def pristine(tmp_path_factory) -> Path:
    return make_bundle(tmp_path_factory.mktemp("pristine"))


def test_every_member_is_checked(pristine, tmp_path):
    names = [name for name in members(pristine) if name != MANIFEST]
    assert len(names) >= 9
    for name in names:
        contents = members(pristine)
        body = bytearray(contents[name])
        body[len(body) // 2] ^= 0x01  # one bit of one byte
        changed = tmp_path / "changed.zip"
        rewrite(changed, {**contents, name: bytes(body)})
        result = verify(changed)
        assert result.exit_code == 1, (name, result.output)
        assert result.output.splitlines()[0] == f"{name}: changed (SHA-256 or size differs)"
        assert "verdicts identical" not in result.output


def test_missing_and_added_files_are_named(pristine, tmp_path):
    contents = members(pristine)
    body = next(name for name in contents if name.startswith("bodies/"))
    del contents[body]
    contents["bodies/extra.bin"] = b"planted"
    changed = tmp_path / "changed.zip"
    rewrite(changed, contents)
    result = verify(changed)
    assert result.exit_code == 1
    assert f"{body}: missing" in result.output
    assert "bodies/extra.bin: added (not in the manifest)" in result.output


def test_a_tampered_verdict_is_listed_with_the_manifest_recomputed(pristine, tmp_path):
    contents = members(pristine)
    rows = records(contents)
    target = next(r for r in rows if r["verdict"]["verdict"] == "blocked")
    target["verdict"]["verdict"] = "accessible"
    target["verdict"]["blocking"] = None
    contents["records.jsonl"] = b"".join(json.dumps(r).encode() + b"\n" for r in rows)
    changed = tmp_path / "changed.zip"
    rewrite(changed, contents, manifest=True)
    result = verify(changed)
    assert result.exit_code == 1, result.output
    assert "files match the manifest" in result.output
    lines = [
        line for line in result.stdout.splitlines() if line.startswith(target["measurement_id"])
    ]
    before, after = '"accessible"', '"blocked"'
    assert f"{target['measurement_id']}: verdict: {before} -> {after}" in lines
    assert len(lines) == 2  # verdict and blocking, nothing else
    assert "verdicts identical" not in result.output


def test_the_bundled_fingerprints_are_the_ones_used(pristine, tmp_path):
    # Drop the extra fingerprint file (manifest made to match): today's analysis no longer
    # recognises the notice, and says so for both measurements it decided.
    contents = members(pristine)
    del contents["fingerprints/extra-01-kg.json"]
    manifest = json.loads(contents[MANIFEST])
    manifest["fingerprints"]["ours"] = ["fingerprints/fingerprints.json"]
    contents[MANIFEST] = json.dumps(manifest).encode()
    changed = tmp_path / "changed.zip"
    rewrite(changed, contents, manifest=True)
    result = verify(changed)
    assert result.exit_code == 1
    assert result.stdout.count(': blockpage: "lab.kg_notice" -> null') == 2
    assert result.stdout.count(": confirmed: true -> false") == 2


# ------------------------------------------------------------------ hostile input


def _zip(entries: dict[str, bytes], method: int = zipfile.ZIP_DEFLATED) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", method) as archive:
        for name, body in entries.items():
            archive.writestr(zipfile.ZipInfo(name), body, compress_type=method)
    return buffer.getvalue()


def _claiming(size: int) -> bytes:
    """A small stored zip whose central directory says its one member is ``size`` bytes."""
    data = bytearray(_zip({"records.jsonl": b"{}"}, zipfile.ZIP_STORED))
    central = data.rindex(b"PK\x01\x02")
    data[central + 24 : central + 28] = struct.pack("<I", size)
    return bytes(data)


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        (b"not a zip at all\n", "not a zip file"),
        (b"PK\x03\x04" + b"\0" * 40, "not a zip file"),
        (_zip({"../x": b"x", MANIFEST: b"{}"}), 'member "../x" has an unsafe name'),
        (_zip({"/etc/passwd": b"x"}), 'member "/etc/passwd" has an unsafe name'),
        (_zip({"a/../../x": b"x"}), "has an unsafe name"),
        (_zip({"a\\..\\x": b"x"}), "has an unsafe name"),
        (_zip({"\x1b]0;pwned\x07": b"x"}), 'member "\\u001b]0;pwned\\u0007" has an unsafe'),
        (_zip({"bomb.bin": b"\0" * (50 << 20)}), 'member "bomb.bin" expands'),
        (_claiming(3 << 30), f"is {3 << 30} bytes (at most {MAX_MEMBER_BYTES})"),
        (_zip({"records.jsonl": b""}), "no MANIFEST.json"),
        (_zip({MANIFEST: b"\xff not json"}), "MANIFEST.json: not JSON"),
        (_zip({MANIFEST: b'{"bundle_format": 99}'}), "not a bundle of format 1"),
        (_zip({MANIFEST: b'{"bundle_format": 1, "files": {"../x": {}}}'}), "bad entry"),
    ],
    ids=[
        "text",
        "truncated",
        "dotdot",
        "absolute",
        "nested",
        "backslash",
        "escape",
        "bomb",
        "huge",
        "no-manifest",
        "bad-manifest",
        "format",
        "manifest-name",
    ],  # fmt: skip
)
def test_hostile_zips_are_refused_in_one_line(tmp_path, content, expected):
    (tmp_path / "work").mkdir()
    path = tmp_path / "hostile.zip"
    path.write_bytes(content)
    before = sorted(p.name for p in tmp_path.rglob("*"))
    result = verify(path)
    assert result.exit_code == 2, result.output
    assert expected in result.output
    assert len(result.output.strip().splitlines()) == 1
    assert "\x1b" not in result.output
    assert sorted(p.name for p in tmp_path.rglob("*")) == before  # nothing extracted


def test_a_duplicated_member_is_refused(pristine, tmp_path):
    path = tmp_path / "twice.zip"
    path.write_bytes(pristine.read_bytes())
    with pytest.warns(UserWarning), zipfile.ZipFile(path, "a") as archive:
        archive.writestr("records.jsonl", b"{}\n")
    result = verify(path)
    assert result.exit_code == 2
    assert 'member "records.jsonl" is in the zip twice' in result.output


def test_a_body_bigger_than_any_the_store_keeps_is_refused(pristine, tmp_path):
    contents = members(pristine)
    body = next(name for name in contents if name.startswith("bodies/"))
    contents[body] = os.urandom(2 << 20)  # incompressible: not a bomb, just big
    changed = tmp_path / "changed.zip"
    rewrite(changed, contents, manifest=True)
    result = verify(changed)
    assert result.exit_code == 2
    assert f"is {2 << 20} bytes (at most {1 << 20} here)" in result.output


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        (b'{"measurement_id": "x"}\n', "records.jsonl:13: not a measurement record"),
        (b"\xff\xfe\n", "records.jsonl:13: not UTF-8"),
        (None, "records.jsonl:13: observations of the wrong types"),
    ],
)
def test_a_broken_record_is_named_by_its_line(pristine, tmp_path, line, expected):
    contents = members(pristine)
    if line is None:  # a record whose types are wrong deep inside: addresses as a number
        record = records(contents)[0]
        record["observations"]["dns"][0]["addresses"] = 12
        line = json.dumps(record).encode() + b"\n"
    contents["records.jsonl"] += line
    changed = tmp_path / "changed.zip"
    rewrite(changed, contents, manifest=True)
    result = verify(changed)
    assert result.exit_code == 2, result.output
    assert expected in result.output


# ------------------------------------------------------------------ determinism

_ANALYSE = """
import json, sys
from probe.app.bundle import canonical_json, verdict_record
from probe.analysis import analyze
from probe.model.records import Observations
for line in open(sys.argv[1], encoding="utf-8"):
    obs = Observations.from_dict(json.loads(line))
    sys.stdout.write(canonical_json(verdict_record(analyze(obs))) + "\\n")
"""


def _varied() -> list[Observations]:
    """Observations whose analysis goes through sets: addresses, ASNs, header names."""
    differs = observations("many.kg", "2026-10-01 08:00:00", blocked=False)
    differs.dns[0] = DNSQuery("many.kg", "A", "system", "udp://192.0.2.53:53", None, "NOERROR",
                              [f"198.51.100.{i}" for i in range(9, 0, -1)])  # fmt: skip
    differs.dns[1].addresses = [f"93.184.216.{i}" for i in range(40, 20, -1)]
    assert differs.control.response is not None
    differs.control.response["dns"]["addrs"] = [f"93.184.216.{i}" for i in range(60, 41, -1)]
    notice = notice_observations()
    notice.http[0].headers += [[f"X-Header-{i}", "v"] for i in range(30)]
    return [
        observations("blocked.kg", "2026-10-01 08:00:00", blocked=True),
        observations("fine.kg", "2026-10-01 08:00:00", blocked=False),
        differs,
        notice,
    ]


def test_verdict_json_is_the_same_bytes_in_any_process(tmp_path):
    source = tmp_path / "observations.jsonl"
    source.write_text("".join(json.dumps(o.to_dict()) + "\n" for o in _varied()))
    outputs = []
    for seed in ("0", "1", "4242", "random"):
        env = {**os.environ, "PYTHONHASHSEED": seed}
        done = subprocess.run([sys.executable, "-c", _ANALYSE, str(source)], cwd=ROOT, env=env,
                              capture_output=True, check=True)  # fmt: skip
        outputs.append(done.stdout)
    assert len(outputs[0].splitlines()) == 4
    assert all(output == outputs[0] for output in outputs)
    # The DNS case really did go through the address sets.
    differs = json.loads(outputs[0].splitlines()[2])
    assert differs["dns_consistency"] == "inconsistent"
