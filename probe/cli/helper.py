"""``probe helper``: run the test helper."""

from __future__ import annotations

import click

from ..errors import InputError
from ._group import BadInput, cli


@cli.group()
def helper() -> None:
    """The test helper: the control seen from outside the censored network."""


@helper.command()
@click.option("--listen", default="0.0.0.0:8080", show_default=True, metavar="HOST:PORT")
@click.option("--resolver", metavar="URL", help="Resolver to use [default: /etc/resolv.conf].")
@click.option(
    "--ca-file", type=click.Path(exists=True, dir_okay=False), help="Trust anchors (PEM)."
)
@click.option(
    "--asn-db",
    type=click.Path(exists=True, dir_okay=False),
    help="IP-to-ASN table (iptoasn.com TSV) for the ip_info answers, and for /whoami's "
    "AS number, country and AS name.",
)
@click.option("--max-in-flight", type=click.IntRange(min=1), default=25, show_default=True)
@click.option(
    "--own-address",
    "own_addresses",
    multiple=True,
    metavar="IP",
    help="An address of this host that is on none of its interfaces (a cloud's 1:1 NAT, an "
    '"elastic IP"): never connected to, like the interfaces\' own. Repeatable.',
)
@click.option(
    "--tls-cert",
    type=click.Path(exists=True, dir_okay=False),
    help="Serve HTTPS with this certificate chain (PEM), e.g. from a public CA for the "
    "helper's name; read again on SIGHUP, so a renewed certificate needs no restart.",
)
@click.option(
    "--tls-key", type=click.Path(exists=True, dir_okay=False), help="The certificate's key (PEM)."
)
def serve(
    listen: str,
    resolver: str | None,
    ca_file: str | None,
    asn_db: str | None,
    max_in_flight: int,
    own_addresses: tuple[str, ...],
    tls_cert: str | None,
    tls_key: str | None,
) -> None:
    """Serve OONI's test-helper protocol, so our probes and OONI's can use it.

    It resolves, connects, handshakes and fetches on behalf of probes, refusing private,
    loopback, link-local and other bogon addresses, and this host's own addresses (every
    address of its interfaces, re-read every 10 s; with a specific --listen address, that
    address and the services listening on all addresses), so it can never become a proxy
    into its own network or its own machine. GET /whoami tells a probe its public address
    (for scrubbing) and its network's AS number, country and AS name; the helper never logs
    client addresses.

    Serve it over HTTPS (--tls-cert, --tls-key) or behind a TLS-terminating proxy: over plain
    HTTP the network between a probe and the helper reads which site each control request is
    for, and can reset it or forge the answer and /whoami.

    Example:

        probe helper serve --listen 0.0.0.0:443 --tls-cert fullchain.pem --tls-key privkey.pem
    """
    from ..helper.config import HelperConfig
    from ..helper.serve import serve as serve_helper
    from ..model.addresses import canonical_ip
    from ..net.resolvers import parse_resolver

    host, sep, port = listen.rpartition(":")
    if not sep or not port.isdigit():
        raise click.BadParameter("expected HOST:PORT", param_hint="--listen")
    try:
        parsed = parse_resolver(resolver) if resolver else None
    except InputError as exc:
        raise click.BadParameter(str(exc), param_hint="--resolver") from None
    if bool(tls_cert) != bool(tls_key):
        raise click.UsageError("--tls-cert and --tls-key go together")
    for address in own_addresses:
        if canonical_ip(address) is None:
            raise click.BadParameter(f"not an IP address: {address!r}", param_hint="--own-address")
    try:
        serve_helper(
            HelperConfig(
                host=host.strip("[]") or "0.0.0.0",
                port=int(port),
                resolver=parsed,
                ca_file=ca_file,
                asn_db=asn_db,
                max_in_flight=max_in_flight,
                own_addresses=own_addresses,
                certfile=tls_cert,
                keyfile=tls_key,
            )
        )
    except InputError as exc:  # a bad --asn-db line (FILE:LINE: ...), no system resolver
        raise BadInput(str(exc)) from None
    except OSError as exc:  # e.g. the address is in use
        raise click.ClickException(f"cannot serve on {listen}: {exc.strerror or exc}") from None
