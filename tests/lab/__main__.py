"""Interactive censorship lab.

    python -m tests.lab shell [--censor SPEC ...] [--sites NAME,NAME...] [-- COMMAND ...]

Brings the lab up, applies the censorship SPECs, opens a shell (or runs COMMAND) in the vantage
namespace, and tears everything down when it exits. Inside, /etc/resolv.conf is the ISP
resolver; $LAB_CA_FILE, $LAB_ASN_DB, $LAB_DOH_URL, $LAB_CONTROL_RESOLVER and $LAB_HELPER_URL
are set, and probe's own test helper is running at $LAB_HELPER_URL (unless --no-helper).

SPEC mini-syntax: ``primitive:arg:arg:key=value...``, the primitive being any censorship
method of tests.lab.Lab; arguments that look like numbers become int/float; sites may be named
wherever an IP is expected. Examples::

    dns_lie:24.kg:192.88.99.11           ISP resolver answers 24.kg -> block-page server
    dns_nxdomain:kloop.kg                (also dns_no_answer, dns_drop, dns_servfail)
    dns_inject:www.azattyk.org:10.10.34.35
    tcp_blackhole:24.kg                  tcp_blackhole:192.88.99.100:443
    tcp_refuse:kloop.kg:443
    dpi_reset:www.azattyk.org            dpi_close:24.kg:443     dpi_drop:kaktus.media
    inject_blockpage:respublica.kg       inject_blockpage:kloop.kg:to=192.88.99.13
    sni_proxy_reset:24.kg                helper_dpi_reset:kloop.kg:443
    throttle:24.kg:delay_ms=200:loss=0.05:rate_kbit=512
    site_down:vesti.kg
    offline
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys

PRIMITIVES = {
    "dns_lie", "dns_nxdomain", "dns_no_answer", "dns_drop", "dns_servfail", "dns_inject",
    "tcp_blackhole", "tcp_refuse", "dpi_reset", "dpi_close", "dpi_drop", "inject_blockpage",
    "throttle", "site_down", "offline", "sni_proxy_reset", "helper_dpi_reset",
}  # fmt: skip


def _value(text: str):
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    return text


def parse_spec(spec: str) -> tuple[str, list, dict]:
    name, *parts = spec.split(":")
    if name not in PRIMITIVES:
        raise ValueError(f"unknown censorship primitive {name!r}; one of {sorted(PRIMITIVES)}")
    args, kwargs = [], {}
    for part in parts:
        key, eq, val = part.partition("=")
        if eq and key.isidentifier():
            kwargs[key] = _value(val)
        else:
            # IPs and names stay strings; bare numbers (ports) become ints
            args.append(part if part.count(".") > 1 or not part.isdigit() else int(part))
    return name, args, kwargs


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m tests.lab", description=__doc__.split("\n")[1])
    sub = ap.add_subparsers(dest="cmd", required=True)
    sh = sub.add_parser("shell", help="open a shell in the vantage namespace")
    sh.add_argument("--censor", action="append", default=[], metavar="SPEC")
    sh.add_argument("--sites", help="comma-separated extra sites to add")
    sh.add_argument("--no-helper", action="store_true", help="don't start probe's test helper")
    sh.add_argument("command", nargs=argparse.REMAINDER)
    opts = ap.parse_args(argv)
    specs = [parse_spec(s) for s in opts.censor]

    from tests.lab import Lab

    with Lab() as lab:
        for name in filter(None, (opts.sites or "").split(",")):
            lab.add_site(name)
        for name, args, kwargs in specs:
            getattr(lab, name)(*args, **kwargs)
        if not opts.no_helper:
            lab.start_probe_helper(stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        env = {
            "LAB_CA_FILE": lab.ca_file,
            "LAB_ASN_DB": lab.asn_db,
            "LAB_DOH_URL": lab.DOH_URL,
            "LAB_CONTROL_RESOLVER": lab.CONTROL_RESOLVER,
            "LAB_HELPER_URL": lab.helper_url,
            "PS1": "lab-vantage# ",
            # The interpreter's bin folder first, so `probe` is the one under test.
            "PATH": f"{os.path.dirname(sys.executable)}:{os.environ.get('PATH', '')}",
        }
        command = [c for c in opts.command if c != "--"] or [os.environ.get("SHELL", "/bin/bash")]
        print(f"lab up: vantage={lab.vantage} isp={lab.isp} net={lab.net}", file=sys.stderr)
        for site in lab.sites.values():
            print(f"  {site.name:24} {' '.join(site.ips)}", file=sys.stderr)
        print(
            "try: probe check --input https://24.kg/ --control-resolver $LAB_DOH_URL "
            "--helper $LAB_HELPER_URL --ca-file $LAB_CA_FILE --db /tmp/lab.db",
            file=sys.stderr,
        )
        r = subprocess.run(["ip", "netns", "exec", lab.vantage, *command],
                           env=dict(os.environ, **env))  # fmt: skip
        return r.returncode


if __name__ == "__main__":
    sys.exit(main())
