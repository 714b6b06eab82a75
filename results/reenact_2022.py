"""Re-enact the 2022 Kyrgyz blocks in the censorship lab and write a report of them.

    python -m results.reenact_2022 [--short] [--out DIR]

A LAB RE-ENACTMENT, NOT A MEASUREMENT OF REAL NETWORKS. It builds the network-namespace lab
(tests/lab: needs root), and on each re-enacted day of June to December 2022 applies the blocks
in force that day on each of two made-up ISPs (given the AS numbers AS12997 and AS8449 with
--probe-asn; the lab has one vantage, so its censorship is switched between them), then runs the
real `probe check` in the vantage under faketime, so the stored measurement times are the
re-enacted dates. Only the vantage's clock is 2022: the test helper, the sites and the resolvers
run on the real clock ("outside", now). All measurements go into one database; then `probe
report` (HTML), `probe timeline --json --anomalies` and `probe bundle` are written into DIR
(default results/2022-kg-lab) with a README saying what this is.

The blocks, after the events of 2022 (the methods, and the dates marked *assumed*, are the
re-enactment's own, not findings):

* www.azattyk.org (Radio Azattyk): blocked from 26 October 2022 for two months (to 26 December);
* 24.kg: suspended 25 August 2022; the order withdrawn 20 October (*assumed*), one ISP (AS8449)
  keeps blocking it to the end of the year (*assumed*);
* respublica.kg: blocked from 15 June 2022, to the end of the year (*assumed*).

AS12997 blocks by DNS lies (its resolver answers its notice server's address) and by TLS SNI
resets (Radio Azattyk); AS8449 only injects its block page into cleartext HTTP, so there the
https:// URLs stay accessible.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parents[1]
DEFAULT_OUT = REPO_ROOT / "results" / "2022-kg-lab"
TITLE = "Lab re-enactment of the 2022 Kyrgyz blocks — not a measurement of real networks"
DNS_SNI, HTTP_PAGE = "AS12997", "AS8449"
NETWORKS = (DNS_SNI, HTTP_PAGE)
#: The URLs measured every time: each blocked outlet over both schemes, and one baseline.
TARGETS = [
    "https://www.azattyk.org/", "http://www.azattyk.org/",
    "https://24.kg/", "http://24.kg/",
    "https://respublica.kg/", "http://respublica.kg/",
    "https://kaktus.media/",
]  # fmt: skip
#: The lab's sites (www.azattyk.org is added with its redirect to https://).
SITES = ["24.kg", "respublica.kg", "kaktus.media"]
# Short timeouts: nothing in the re-enactment waits on a silent peer.
TIMEOUTS = [
    "--dns-timeout", "2", "--tcp-timeout", "2", "--tls-timeout", "2",
    "--http-timeout", "4", "--control-timeout", "20",
]  # fmt: skip
HOUR = 9  # each re-enacted day, the first network is measured at 09:00 UTC, the next at 09:10
END_OF_YEAR = datetime.date(2023, 1, 1)


@dataclass(frozen=True)
class Block:
    domain: str
    network: str
    method: str  # "dns" (lie: the ISP's notice server), "sni" (reset), "http" (block page)
    start: datetime.date  # first day in force
    end: datetime.date  # first day no longer in force


def _d(text: str) -> datetime.date:
    return datetime.date.fromisoformat(text)


BLOCKS = [
    Block("www.azattyk.org", DNS_SNI, "sni", _d("2022-10-26"), _d("2022-12-26")),
    Block("www.azattyk.org", HTTP_PAGE, "http", _d("2022-10-26"), _d("2022-12-26")),
    Block("24.kg", DNS_SNI, "dns", _d("2022-08-25"), _d("2022-10-20")),
    Block("24.kg", HTTP_PAGE, "http", _d("2022-08-25"), END_OF_YEAR),
    Block("respublica.kg", DNS_SNI, "dns", _d("2022-06-15"), END_OF_YEAR),
    Block("respublica.kg", HTTP_PAGE, "http", _d("2022-06-15"), END_OF_YEAR),
]
#: The days the orders took or lost effect: always re-enacted, so events start on them.
KEY_DAYS = sorted({b.start for b in BLOCKS} | {b.end for b in BLOCKS if b.end < END_OF_YEAR})
#: --short: two or three days around each change, for the test.
SHORT_DAYS = [_d(d) for d in ("2022-06-10", "2022-06-15", "2022-08-25", "2022-09-01",
                              "2022-10-20", "2022-10-26", "2022-11-02")]  # fmt: skip


def days(short: bool, every: int = 6) -> list[datetime.date]:
    """The re-enacted days: every few days from 1 June to 31 December 2022, and the key days."""
    if short:
        return SHORT_DAYS
    first, last = _d("2022-06-01"), _d("2022-12-31")
    regular = {first + datetime.timedelta(days=n) for n in range(0, (last - first).days + 1, every)}
    return sorted(regular | set(KEY_DAYS) | {last})


def in_force(network: str, day: datetime.date) -> list[Block]:
    return [b for b in BLOCKS if b.network == network and b.start <= day < b.end]


def censor(lab: Any, blocks: list[Block]) -> None:
    """Apply the blocks in the lab (which has been reset)."""
    with lab.batch():
        for block in blocks:
            if block.method == "dns":
                # Its own notice (no fingerprint knows it): the fingerprinted block page is
                # AS8449's, so the two networks' pages differ, as two ISPs' would.
                lab.dns_lie(block.domain, lab.NOTICE_IP)
            elif block.method == "sni":
                lab.dpi_reset(block.domain, port=443)
            elif block.method == "http":
                lab.inject_blockpage(lab.site(block.domain).ip)
            else:
                raise ValueError(f"unknown method {block.method!r}")


def faketime_env(when: str) -> dict[str, str]:
    """What runs a program at `when` (UTC, the clock running on from there) with libfaketime.

    What the `faketime` command would set, without its date parsing (local time, GNU date):
    the multi-threaded library (probe resolves names in threads), the clock starting at `when`
    and running on ("@"), the monotonic clock left alone (asyncio's timeouts), UTC."""
    lib = libfaketime()
    if not lib:
        raise RuntimeError("libfaketime is missing: apt-get install faketime")
    return {
        "LD_PRELOAD": lib,
        "FAKETIME": f"@{when}",
        "FAKETIME_DONT_FAKE_MONOTONIC": "1",
        "TZ": "UTC",
    }


def libfaketime() -> str | None:
    """The multi-threaded libfaketime, where Debian and others install it."""
    for d in ("/usr/lib/x86_64-linux-gnu", "/usr/lib/aarch64-linux-gnu", "/usr/lib", "/usr/lib64",
              "/usr/local/lib"):  # fmt: skip
        path = Path(d) / "faketime" / "libfaketimeMT.so.1"
        if path.exists():
            return str(path)
    return None


def probe_check(lab: Any, db: Path, network: str, when: str, env: dict[str, str]) -> list[dict]:
    """One `probe check --json` of TARGETS in the vantage at `when`, as `network`."""
    argv = [sys.executable, "-m", "probe.cli", "check", "--json", "--db", str(db)]
    for url in TARGETS:
        argv += ["--input", url]
    argv += [
        "--control-resolver", lab.DOH_URL,
        "--control-resolver", f"udp://{lab.CONTROL_RESOLVER}:53",
        "--helper", lab.helper_url,
        "--ca-file", lab.ca_file,
        "--probe-asn", network, "--probe-cc", "KG",
        *TIMEOUTS,
    ]  # fmt: skip
    result = lab.run(lab.vantage, argv, timeout=180, env={**env, **faketime_env(when)})
    if result.returncode != 0:
        raise RuntimeError(f"probe check at {when} on {network} failed:\n{result.stderr}")
    return [json.loads(line) for line in result.stdout.splitlines() if line.strip()]


def reenact(lab: Any, db: Path, env: dict[str, str], short: bool, log: Any) -> list[dict]:
    """Every re-enacted day, each network in turn: its blocks of that day, then a run."""
    lines = []
    for day in days(short):
        for n, network in enumerate(NETWORKS):
            lab.reset()
            censor(lab, in_force(network, day))
            when = f"{day.isoformat()} {HOUR:02d}:{n * 10:02d}:00"
            got = probe_check(lab, db, network, when, env)
            blocked = sorted(g["input"] for g in got if g["verdict"] == "blocked")
            print(f"{when} {network}: blocked {', '.join(blocked) or 'nothing'}", file=log)
            lines += [dict(g, network=network, when=when) for g in got]
    lab.reset()
    return lines


def probe(argv: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    """The probe command outside the lab, on the real clock (reading the database only)."""
    result = subprocess.run([sys.executable, "-m", "probe.cli", *argv], capture_output=True,
                            text=True, env=env, cwd=REPO_ROOT, timeout=300)  # fmt: skip
    if result.returncode != 0:
        raise RuntimeError(f"probe {argv[0]} failed:\n{result.stderr}")
    return result


def has_option(command: str, option: str, env: dict[str, str]) -> bool:
    return option in probe([command, "--help"], env).stdout


def write_artefacts(db: Path, out: Path, env: dict[str, str], max_gap_hours: float) -> list[str]:
    """The report, the timeline and the bundle of the database into out; what was left out."""
    out.mkdir(parents=True, exist_ok=True)
    missing = []
    report = ["report", "--db", str(db), "--format", "html", "-o", str(out / "report.html"),
              "--max-gap-hours", str(max_gap_hours)]  # fmt: skip
    if has_option("report", "--title", env):
        report += ["--title", TITLE]
    else:
        missing.append("report --title")
    probe(report, env)
    timeline = probe(["timeline", "--db", str(db), "--json", "--anomalies"], env)
    (out / "timeline.jsonl").write_text(timeline.stdout)
    bundle = out / "bundle.zip"
    bundle.unlink(missing_ok=True)
    if "bundle" in probe(["--help"], env).stdout:
        probe(["bundle", "--db", str(db), "-o", str(bundle)], env)
    else:
        missing.append("bundle")
    return missing


#: The README of the output folder, filled in by write_readme.
README = Path(__file__).with_name("reenact_2022_readme.md")


def write_readme(out: Path, summary: dict[str, Any]) -> None:
    (out / "README.md").write_text(README.read_text().format(**summary))


def volunteer_env(home: Path) -> dict[str, str]:
    """A throwaway volunteer (configuration with consent, data) so no real one is touched."""
    config = home / "config.toml"
    config.write_text('consent = "2022-06-01 00:00:00"\nvantage = "lab-reenactment"\n')
    return {
        "PROBE_CONFIG": str(config),
        "XDG_DATA_HOME": str(home / "data"),
        "XDG_CONFIG_HOME": str(home / "config"),
        "PYTHONPATH": str(REPO_ROOT),
    }


@dataclass
class Outcome:
    db: Path
    out: Path
    lines: list[dict]
    missing: list[str]


def run(out: Path, short: bool, workdir: Path, log: Any = sys.stderr) -> Outcome:
    """Build the lab, re-enact, write the artefacts into out (the database stays in workdir)."""
    from tests.lab import Lab

    env = volunteer_env(workdir)
    full_env = {**os.environ, **env}
    db = workdir / "reenact_2022.db"
    db.unlink(missing_ok=True)
    with Lab(sites=SITES) as lab:
        # Radio Azattyk's site sends cleartext visitors to https://, as the real one does: so
        # an SNI reset blocks its http:// URL too, where a block page on HTTP comes first.
        lab.add_site("www.azattyk.org", https_only_redirect=True)
        helper = lab.start_probe_helper(stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            lines = reenact(lab, db, env, short, log)
        finally:
            helper.terminate()
            helper.wait(10)
    gap = 24.0 * 8 if not short else 24.0 * 60
    missing = write_artefacts(db, out, full_env, gap)
    the_days = days(short)
    bundle = "- `bundle.zip`: `probe bundle` (check it with `probe verify-bundle bundle.zip`).\n"
    write_readme(out, {
        "short_flag": " --short" if short else "",
        "ndays": len(the_days), "first": the_days[0].isoformat(), "last": the_days[-1].isoformat(),
        "schedule": "a few days around each change" if short
        else "every six days, and every day an order took or lost effect",
        "nmeasurements": len(lines), "nruns": len(the_days) * len(NETWORKS), "gap": gap,
        "version": probe(["--version"], full_env).stdout.strip(),
        "title": f' --title "{TITLE}"' if "report --title" not in missing else "",
        "bundle": bundle if "bundle" not in missing else "",
        "title_note": "" if "report --title" not in missing else (
            "\nThis probe has no `report --title`: the page (and the bundle's report/) is headed\n"
            "\"Website blocking report\" and does not itself say that it is a lab re-enactment.\n"
        ),
    })  # fmt: skip
    return Outcome(db, out, lines, missing)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m results.reenact_2022", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("--short", action="store_true", help="a few days only (the test's)")
    parser.add_argument(
        "--out", type=Path, help=f"where to write [default: {DEFAULT_OUT}; needed with --short]"
    )
    parser.add_argument("--keep-db", type=Path, help="also copy the database here")
    args = parser.parse_args(argv)
    if args.out is None:
        if args.short:  # the committed folder holds the full re-enactment only
            parser.error("--short needs --out DIR")
        args.out = DEFAULT_OUT
    with tempfile.TemporaryDirectory(prefix="reenact-") as tmp:
        outcome = run(args.out, args.short, Path(tmp))
        if args.keep_db:
            shutil.copyfile(outcome.db, args.keep_db)
    for what in outcome.missing:
        print(f"not on this probe: {what} (left out)", file=sys.stderr)
    print(f"{len(outcome.lines)} measurements; written to {args.out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
