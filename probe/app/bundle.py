"""An evidence bundle: the measurements a report rests on, in one zip anyone can re-check.

:func:`write_bundle` writes, for the measurements a set of :class:`~probe.store.research.Filters`
selects:

* ``measurements.ooni.jsonl``: each as OONI JSON (the one export function,
  :func:`probe.store.exports.ooni_measurement`), for OONI's tools;
* ``records.jsonl``: our own rows, one measurement a line: its observations
  (:func:`probe.model.records.to_dict`) and the stored verdict. A body is not inline: the
  hop names its file (``body_file``), so what the analysis reads is the file a reader opens;
* ``bodies/<measurement id>/hop<N>.bin``: every stored body, decompressed, as served (the
  first 64 KiB the store keeps);
* ``fingerprints/``: the fingerprint files in force (ours, any ``--fingerprints`` file, Censored
  Planet's), in their order of precedence (the manifest lists it);
* ``report/report.html`` and ``report/report.json``: the report over the same filters, by the
  code of ``probe report``;
* ``MANIFEST.json``: every other file with its SHA-256 and size, the probe version, the filters.

The zip is deterministic: members in name order, fixed timestamps and modes, records in the
store's order, JSON with sorted keys; the same database, filters and generation time
(``SOURCE_DATE_EPOCH`` for the command) give the same bytes with the same zlib.

:func:`verify_bundle` reads a bundle without extracting anything: every member against the
manifest (changed, missing or added files are named), then today's analysis with the bundled
fingerprints over the bundled observations, compared field by field with the bundled
verdicts. A zip that is not one, a bomb, an unsafe name or a huge member is an
:class:`~probe.errors.InputError`.
"""

from __future__ import annotations

import hashlib
import io
import json
import re
import tempfile
import zipfile
import zlib
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from sqlite_utils import Database

from .. import __version__
from ..analysis import analyze
from ..analysis import fingerprints as fingerprint_files
from ..analysis.fingerprints import Fingerprints
from ..errors import InputError
from ..model.records import Observations, Verdict
from ..report import Options
from ..report.escape import json_text
from ..report.render import render
from ..store.exports import ooni_measurement
from ..store.research import Filters, iter_stored
from .reports import local_report

#: The layout written; a verifier refuses a bundle of a layout it does not know.
BUNDLE_FORMAT = 1

MANIFEST = "MANIFEST.json"
OONI_FILE = "measurements.ooni.jsonl"
RECORDS_FILE = "records.jsonl"
REPORT_HTML = "report/report.html"
REPORT_JSON = "report/report.json"
FINGERPRINTS_DIR = "fingerprints/"
BODIES_DIR = "bodies/"

#: Every member's time: the earliest a zip can say (the data's own times are inside).
ZIP_TIME = (1980, 1, 1, 0, 0, 0)

# What a verifier accepts before reading a byte: bounds a hostile zip cannot push past. A
# member is streamed (hashed, records read line by line) unless it is read whole: a body, a
# fingerprint file, the manifest, each with its own smaller bound. The writer keeps to them.
MAX_MEMBERS = 1_000_000
MAX_MEMBER_BYTES = zipfile.ZIP64_LIMIT  # 2 GiB
MAX_TOTAL_BYTES = 16 << 30
MAX_MANIFEST_BYTES = 256 << 20
MAX_FINGERPRINT_BYTES = 64 << 20
#: The store keeps 64 KiB of a body; a bundled one is never more than this.
MAX_BODY_BYTES = 1 << 20
MAX_RECORD_BYTES = 64 << 20
#: A member this much larger than its compressed form (and over 1 MiB) is a bomb: deflate
#: reaches about 1030:1 on one repeated byte, JSON and pages stay far below 100:1.
MAX_RATIO = 200
RATIO_FLOOR = 1 << 20

_SAFE_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,99}")
_SAFE_NAME = re.compile(r"[A-Za-z0-9._-]+")
_CHUNK = 1 << 16


@dataclass(frozen=True, slots=True)
class Written:
    """What a bundle holds: its measurements, bodies and the report's count."""

    measurements: int
    bodies: int
    report_measurements: int
    files: int


@dataclass(frozen=True, slots=True)
class Difference:
    """A verdict field today's analysis decides otherwise than the bundle says."""

    measurement_id: str
    field: str
    before: Any
    after: Any


@dataclass(slots=True)
class Verification:
    """The outcome of :func:`verify_bundle`: files that do not match the manifest (each a
    line naming the file), and, when every file matched, the verdicts that differ."""

    problems: list[str] = field(default_factory=list)
    differences: list[Difference] = field(default_factory=list)
    measurements: int = 0
    analysed: bool = False
    manifest: dict[str, Any] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return self.analysed and not self.problems and not self.differences


# ------------------------------------------------------------------ writing


def verdict_record(verdict: Verdict) -> dict[str, Any]:
    """A verdict as the bundle keeps it (plain JSON values)."""
    value: dict[str, Any] = json.loads(canonical_json(verdict.to_dict()))
    return value


def canonical_json(value: Any) -> str:
    """JSON that is the same text on any machine for the same value: sorted keys, ASCII only
    (``\\uXXXX`` for the rest, lone surrogates too), no spaces, shortest float repr."""
    return json.dumps(value, sort_keys=True, ensure_ascii=True, separators=(",", ":"))


def body_name(measurement_id: str, hop: int) -> str:
    """The member holding a hop's body. A measurement id (merged from anyone's database) is
    used as it is only when it is a plain file name, else its SHA-256 stands in."""
    if not _SAFE_ID.fullmatch(measurement_id) or ".." in measurement_id:
        measurement_id = hashlib.sha256(measurement_id.encode("utf-8", "replace")).hexdigest()
    return f"{BODIES_DIR}{measurement_id}/hop{hop}.bin"


class _Spool:
    """Members' contents kept in one temporary file until all are known (so the manifest can
    be written first and members in name order), each with its hash and size."""

    def __init__(self) -> None:
        self.file = tempfile.TemporaryFile()
        self.members: dict[str, tuple[int, int, str]] = {}  # name -> offset, size, sha256

    def add(self, name: str, data: bytes) -> None:
        if name in self.members:
            raise ValueError(f"{name}: written twice")  # our bug, never the data's
        _bounded(name, len(data))
        offset = self.file.seek(0, io.SEEK_END)
        self.file.write(data)
        self.members[name] = (offset, len(data), hashlib.sha256(data).hexdigest())

    def add_stream(self, name: str, chunks: Iterable[bytes]) -> None:
        """A member written chunk by chunk (memory stays flat)."""
        if name in self.members:
            raise ValueError(f"{name}: written twice")
        offset = self.file.seek(0, io.SEEK_END)
        digest, size = hashlib.sha256(), 0
        for chunk in chunks:
            self.file.write(chunk)
            digest.update(chunk)
            size += len(chunk)
            _bounded(name, size)
        self.members[name] = (offset, size, digest.hexdigest())

    def copy(self, name: str, out: IO[bytes]) -> None:
        offset, size, _ = self.members[name]
        self.file.seek(offset)
        left = size
        while left:
            chunk = self.file.read(min(_CHUNK, left))
            out.write(chunk)
            left -= len(chunk)

    def close(self) -> None:
        self.file.close()


def _bounded(name: str, size: int) -> None:
    if size > MAX_MEMBER_BYTES:
        raise InputError(
            f"{name} would be over {MAX_MEMBER_BYTES} bytes, more than a verifier reads: "
            "narrow the filters (--since, --until, --domain, --asn)"
        )


def _chunks(file: IO[bytes]) -> Iterator[bytes]:
    while chunk := file.read(_CHUNK):
        yield chunk


def _zip_info(name: str, size: int) -> zipfile.ZipInfo:
    info = zipfile.ZipInfo(name, date_time=ZIP_TIME)
    info.compress_type = zipfile.ZIP_DEFLATED
    info.create_system = 3  # Unix, wherever it is written
    info.external_attr = 0o100644 << 16
    info.file_size = size
    return info


def write_bundle(
    db: Database,
    out: IO[bytes],
    filters: Filters | None = None,
    *,
    generated_at: str,
    shown_filters: dict[str, Any] | None = None,
    fingerprint_files_given: Iterable[str | Path] = (),
    vantage_name: str | None = None,
    include_imported: bool = False,
    options: Options | None = None,
) -> Written:
    """Write the bundle of the measurements ``filters`` select to ``out`` (a seekable binary
    file). ``shown_filters`` is how the report states the filters (the command's options);
    ``fingerprint_files_given`` the ``--fingerprints`` files in force, in order.

    Raises :class:`~probe.errors.InputError` when a fingerprint file cannot be read.
    """
    options = options or Options()
    filters = filters or Filters()
    try:
        ours, shipped = fingerprint_files.sources(fingerprint_files_given)
        Fingerprints.from_texts(ours, shipped)  # what is bundled must load
    except (OSError, UnicodeDecodeError) as exc:
        raise InputError(f"fingerprints: cannot read: {exc}") from None
    spool = _Spool()
    try:
        names = _add_fingerprints(spool, ours, shipped)
        bodies = 0

        def records() -> Iterator[tuple[bytes, bytes]]:
            nonlocal bodies
            for stored in iter_stored(db, filters, include_imported=include_imported):
                obs = stored.observations.to_dict()
                for hop_index, (hop, record) in enumerate(
                    zip(stored.observations.http, obs["http"], strict=True)
                ):
                    if hop.body is None:
                        continue
                    name = body_name(stored.measurement_id, hop_index)
                    spool.add(name, hop.body)
                    bodies += 1
                    record["body"] = None
                    record["body_file"] = name
                row = {
                    "measurement_id": stored.measurement_id,
                    "run_id": stored.run.get("id"),
                    "probe_asn": stored.probe_asn,
                    "probe_cc": stored.probe_cc,
                    "observations": obs,
                    "verdict": verdict_record(stored.verdict),
                }
                ooni = json_text(ooni_measurement(stored, vantage_name))
                yield (canonical_json(row) + "\n").encode(), (ooni + "\n").encode()

        # Both files come from one pass over the store (each measurement read once), each
        # into a file of its own: bodies go into the spool meanwhile.
        count = 0
        with tempfile.TemporaryFile() as record_file, tempfile.TemporaryFile() as ooni_file:
            for record_line, ooni_line in records():
                record_file.write(record_line)
                ooni_file.write(ooni_line)
                count += 1
            for name, file in ((RECORDS_FILE, record_file), (OONI_FILE, ooni_file)):
                file.seek(0)
                spool.add_stream(name, _chunks(file))

        report = local_report(
            db, filters, generated_at=generated_at, shown_filters=shown_filters, options=options
        )
        for name, fmt in ((REPORT_HTML, "html"), (REPORT_JSON, "json")):
            text = io.StringIO(newline="")
            render(report, fmt, text)
            spool.add(name, text.getvalue().encode("utf-8", "backslashreplace"))

        manifest = {
            "bundle_format": BUNDLE_FORMAT,
            "probe_version": __version__,
            "generated_at": generated_at,
            "filters": shown_filters or {},
            "include_imported": include_imported,
            "options": {
                "min_measurements": options.min_measurements,
                "min_vantages": options.min_vantages,
                "max_gap_seconds": options.max_gap,
            },
            "measurements": count,
            "report_measurements": report.timeline.measurements,
            "fingerprints": names,
            "files": {
                name: {"sha256": digest, "size": size}
                for name, (_, size, digest) in sorted(spool.members.items())
            },
        }
        manifest_bytes = (json.dumps(manifest, indent=1, sort_keys=True) + "\n").encode()
        with zipfile.ZipFile(out, "w") as archive:
            archive.writestr(_zip_info(MANIFEST, len(manifest_bytes)), manifest_bytes)
            for name in sorted(spool.members):
                with archive.open(_zip_info(name, spool.members[name][1]), "w") as member:
                    spool.copy(name, member)
        return Written(count, bodies, report.timeline.measurements, len(spool.members) + 1)
    finally:
        spool.close()


def _add_fingerprints(
    spool: _Spool, ours: list[tuple[str, str]], shipped: tuple[str, str] | None
) -> dict[str, Any]:
    """The fingerprint files as members; what the manifest says of them (order = precedence)."""
    listed: dict[str, Any] = {"ours": [], "censoredplanet": None}
    for index, (origin, text) in enumerate(ours):
        if index == 0:
            name = f"{FINGERPRINTS_DIR}{fingerprint_files.OURS}"
        else:
            stem = Path(origin).name
            stem = stem if _SAFE_NAME.fullmatch(stem) and ".." not in stem else "file.json"
            name = f"{FINGERPRINTS_DIR}extra-{index:02d}-{stem}"
        spool.add(name, text.encode("utf-8"))
        listed["ours"].append(name)
    if shipped is not None:
        pair = []
        for shipped_name, text in zip(
            (fingerprint_files.CP_BLOCKPAGES, fingerprint_files.CP_FALSE_POSITIVES),
            shipped,
            strict=True,
        ):
            name = FINGERPRINTS_DIR + shipped_name
            spool.add(name, text.encode("utf-8"))
            pair.append(name)
        listed["censoredplanet"] = pair
    return listed


# ------------------------------------------------------------------ verifying


def _safe_member_name(name: str) -> bool:
    """A name that could not reach outside a folder were anyone to extract it."""
    if not name or len(name) > 512 or name.startswith("/") or "\\" in name or ":" in name:
        return False
    if any(ord(c) < 0x20 or c == "\x7f" for c in name):
        return False
    parts = name.split("/")
    return all(part not in ("", ".", "..") for part in parts)


def _check_members(archive: zipfile.ZipFile) -> dict[str, zipfile.ZipInfo]:
    infos = archive.infolist()
    if len(infos) > MAX_MEMBERS:
        raise InputError(f"not an evidence bundle: {len(infos)} members (at most {MAX_MEMBERS})")
    members: dict[str, zipfile.ZipInfo] = {}
    total = 0
    for info in infos:
        name = info.filename
        shown = json_text(name)
        if not _safe_member_name(name):
            raise InputError(f"refused: member {shown} has an unsafe name")
        if name in members:
            raise InputError(f"refused: member {shown} is in the zip twice")
        if info.flag_bits & 0x1:
            raise InputError(f"refused: member {shown} is encrypted")
        if info.compress_type not in (zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED):
            raise InputError(f"refused: member {shown} uses an unsupported compression")
        if info.file_size > MAX_MEMBER_BYTES:
            raise InputError(
                f"refused: member {shown} is {info.file_size} bytes (at most {MAX_MEMBER_BYTES})"
            )
        if info.file_size > RATIO_FLOOR and info.file_size > MAX_RATIO * max(info.compress_size, 1):
            raise InputError(f"refused: member {shown} expands {info.file_size} times its size")
        total += info.file_size
        members[name] = info
    if total > MAX_TOTAL_BYTES:
        raise InputError(
            f"refused: the members add up to {total} bytes (at most {MAX_TOTAL_BYTES})"
        )
    return members


def _read(archive: zipfile.ZipFile, info: zipfile.ZipInfo, limit: int) -> bytes:
    """A member whole, when it is at most ``limit`` bytes; ``zipfile`` stops at the declared
    size and checks the CRC, so a lying header cannot make it read more."""
    if info.file_size > limit:
        raise InputError(
            f"refused: member {json_text(info.filename)} is {info.file_size} bytes "
            f"(at most {limit} here)"
        )
    with archive.open(info) as member:
        return member.read(info.file_size + 1)


def _manifest(archive: zipfile.ZipFile, members: dict[str, zipfile.ZipInfo]) -> dict[str, Any]:
    info = members.get(MANIFEST)
    if info is None:
        raise InputError(f"not an evidence bundle: no {MANIFEST}")
    try:
        manifest = json.loads(_read(archive, info, MAX_MANIFEST_BYTES))
    except _UNREADABLE as exc:
        raise InputError(f"{MANIFEST}: cannot be read: {exc}") from None
    except ValueError as exc:
        raise InputError(f"{MANIFEST}: not JSON: {exc}") from None
    if not isinstance(manifest, dict) or manifest.get("bundle_format") != BUNDLE_FORMAT:
        raise InputError(f"{MANIFEST}: not a bundle of format {BUNDLE_FORMAT}")
    files = manifest.get("files")
    if not isinstance(files, dict):
        raise InputError(f"{MANIFEST}: no file list")
    for name, entry in files.items():
        if (
            not _safe_member_name(name)
            or not isinstance(entry, dict)
            or not isinstance(entry.get("sha256"), str)
            or not isinstance(entry.get("size"), int)
        ):
            raise InputError(f"{MANIFEST}: bad entry for {json_text(name)}")
    return manifest


#: What reading a damaged member raises (a CRC mismatch, a broken deflate stream, a cut file).
_UNREADABLE = (zipfile.BadZipFile, zlib.error, EOFError, OSError)


def _digest(archive: zipfile.ZipFile, info: zipfile.ZipInfo) -> tuple[str, int]:
    digest, size = hashlib.sha256(), 0
    with archive.open(info) as member:
        while chunk := member.read(_CHUNK):
            digest.update(chunk)
            size += len(chunk)
    return digest.hexdigest(), size


def verify_bundle(path: str | Path) -> Verification:
    """Check the bundle at ``path`` (see the module docstring). Nothing is written to disk.

    Raises :class:`~probe.errors.InputError` for a file that is no bundle or is hostile.
    """
    result = Verification()
    try:
        with zipfile.ZipFile(path) as archive:
            members = _check_members(archive)
            manifest = _manifest(archive, members)
            result.manifest = manifest
            files: dict[str, dict[str, Any]] = manifest["files"]
            for name in sorted(files):
                info = members.get(name)
                if info is None:
                    result.problems.append(f"{name}: missing")
                    continue
                try:
                    digest, size = _digest(archive, info)
                except _UNREADABLE as exc:
                    result.problems.append(f"{name}: cannot be read ({exc})")
                    continue
                if digest != files[name]["sha256"] or size != files[name]["size"]:
                    result.problems.append(f"{name}: changed (SHA-256 or size differs)")
            for name in sorted(set(members) - set(files) - {MANIFEST}):
                result.problems.append(f"{name}: added (not in the manifest)")
            if result.problems:
                return result
            fingerprints = _bundled_fingerprints(archive, members, manifest)
            _reanalyse(archive, members, fingerprints, result)
    except zipfile.BadZipFile as exc:
        raise InputError(f"{path}: not a zip file ({exc})") from None
    except OSError as exc:
        raise InputError(f"{path}: cannot read: {exc.strerror or exc}") from None
    return result


def _bundled_fingerprints(
    archive: zipfile.ZipFile, members: dict[str, zipfile.ZipInfo], manifest: dict[str, Any]
) -> Fingerprints:
    listed = manifest.get("fingerprints")
    if not isinstance(listed, dict) or not isinstance(listed.get("ours"), list):
        raise InputError(f"{MANIFEST}: no fingerprint list")
    cp = listed.get("censoredplanet")
    if cp is not None and not (isinstance(cp, list) and len(cp) == 2):
        raise InputError(f"{MANIFEST}: bad Censored Planet fingerprint list")

    def text(name: Any) -> str:
        if not isinstance(name, str) or name not in members:
            raise InputError(f"{MANIFEST}: fingerprint file {json_text(name)} is not in the zip")
        try:
            return _read(archive, members[name], MAX_FINGERPRINT_BYTES).decode("utf-8")
        except UnicodeDecodeError:
            raise InputError(f"{name}: not UTF-8") from None

    ours = [(name, text(name)) for name in listed["ours"]]
    shipped = None if cp is None else (text(cp[0]), text(cp[1]))
    try:
        return Fingerprints.from_texts(ours, shipped)
    except InputError:
        raise
    except (ValueError, KeyError, TypeError) as exc:  # Censored Planet's files, malformed
        raise InputError(f"{FINGERPRINTS_DIR}: unusable fingerprints: {exc!r}") from None


def _reanalyse(
    archive: zipfile.ZipFile,
    members: dict[str, zipfile.ZipInfo],
    fingerprints: Fingerprints,
    result: Verification,
) -> None:
    info = members.get(RECORDS_FILE)
    if info is None:
        raise InputError(f"not an evidence bundle: no {RECORDS_FILE}")
    with archive.open(info) as lines:
        number = 0
        while raw := lines.readline(MAX_RECORD_BYTES):
            number += 1
            where = f"{RECORDS_FILE}:{number}"
            if len(raw) == MAX_RECORD_BYTES and not raw.endswith(b"\n"):
                raise InputError(f"{where}: a record over {MAX_RECORD_BYTES} bytes")
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError:
                raise InputError(f"{where}: not UTF-8") from None
            try:
                record = json.loads(line)
                measurement_id = record["measurement_id"]
                before = record["verdict"]
                obs = _observations(archive, members, record["observations"], where)
                if not isinstance(measurement_id, str) or not isinstance(before, dict):
                    raise TypeError("measurement_id or verdict of the wrong type")
            except InputError:
                raise
            except (ValueError, KeyError, TypeError, AttributeError) as exc:
                raise InputError(f"{where}: not a measurement record: {exc!r}") from None
            try:
                after = verdict_record(analyze(obs, fingerprints=fingerprints))
            except (ValueError, KeyError, TypeError, AttributeError) as exc:
                # Values of the wrong type in a made-up record (an address that is a number):
                # our own records never hold them.
                raise InputError(f"{where}: observations of the wrong types: {exc!r}") from None
            for name in sorted(set(before) | set(after)):
                if before.get(name) != after.get(name):
                    result.differences.append(
                        Difference(measurement_id, name, before.get(name), after.get(name))
                    )
            result.measurements += 1
    result.analysed = True


def _observations(
    archive: zipfile.ZipFile,
    members: dict[str, zipfile.ZipInfo],
    data: dict[str, Any],
    where: str,
) -> Observations:
    """A record's observations, each hop's body read back from the file it names."""
    data = dict(data)
    hops = []
    for hop in data.get("http") or []:
        hop = dict(hop)
        name = hop.pop("body_file", None)
        if name is not None:
            if not isinstance(name, str) or not name.startswith(BODIES_DIR) or name not in members:
                raise InputError(f"{where}: body file {json_text(name)} is not in the zip")
            hop["body"] = _read(archive, members[name], MAX_BODY_BYTES)
        hops.append(hop)
    data["http"] = hops
    return Observations.from_dict(data)
