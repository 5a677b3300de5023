"""The lease commands over a fleet: ``--servers A,B,C`` or ``--dns NAME[:PORT]`` picks the
servers, ``lease`` prints a handle (``HOST:PORT/ID``), and every other lease command takes a
handle in place of an id, with no ``--server`` needed. memlease.cli.client_commands hands
its commands here when a fleet is asked for.
"""

from __future__ import annotations

import argparse
import json
from typing import TYPE_CHECKING

from memlease.cli.stats_figures import stats_record
from memlease.protocol import ProtocolRegistry, load_protocols
from memlease.units import format_duration

if TYPE_CHECKING:
    from memlease.client.fleet import Fleet

FLEET_PROTOCOL = "uuid"
"""A fleet's protocol unless --protocol says otherwise: a 128-bit id is no guess."""


def add_fleet_options(parser: argparse.ArgumentParser, *, default: bool) -> None:
    """--servers, --dns and --dns-server, beside the other client options."""

    def value(v: object) -> object:
        return v if default else argparse.SUPPRESS

    parser.add_argument(
        "--servers",
        metavar="A,B,...",
        default=value(None),
        help="a fleet: HOST:PORT of each server, comma-separated; lease prints a handle "
        f"(default protocol {FLEET_PROTOCOL})",
    )
    parser.add_argument(
        "--dns",
        metavar="NAME[:PORT]",
        default=value(None),
        help="a fleet found in DNS: NAME's A/AAAA records with PORT, or its SRV records",
    )
    parser.add_argument(
        "--dns-server",
        metavar="HOST[:PORT]",
        default=value(None),
        help="the DNS server --dns asks (default: the system's resolver)",
    )


def wants_fleet(args: argparse.Namespace) -> bool:
    """Whether the command runs over a fleet: --servers, --dns, or a handle for an id."""
    lease_id = getattr(args, "id", None)
    return bool(args.servers or args.dns) or (isinstance(lease_id, str) and "/" in lease_id)


def fleet_protocol(args: argparse.Namespace) -> str:
    """--protocol, or the protocol a UUID handle implies, or the fleet default."""
    if args.protocol:
        return str(args.protocol)
    lease_id = getattr(args, "id", None)
    if isinstance(lease_id, str) and "/" in lease_id and lease_id.rpartition("/")[2].isdigit():
        return "native"
    return FLEET_PROTOCOL


def connect_fleet(args: argparse.Namespace, registry: ProtocolRegistry | None) -> Fleet:
    """The fleet the options name; ``args.id``, if any, parsed as a handle. Raises
    UsageError for a bad handle or server list."""
    from memlease.cli.client_commands import UsageError
    from memlease.client.fleet import Fleet
    from memlease.client.handle import BadHandle, Handle
    from memlease.core.errors import ConfigError

    reg = registry or load_protocols()
    protocol = fleet_protocol(args)
    if protocol not in reg.protocols:
        raise UsageError(f"memlease: --protocol: unknown protocol {protocol!r}")
    if "id" in args:
        try:
            args.id = Handle.parse(args.id)
        except BadHandle as exc:
            raise UsageError(f"memlease {args.command}: {exc}") from None
    context = None
    if args.tls or args.ca is not None or args.cert is not None or args.key is not None:
        from memlease.tls import client_context

        context = client_context(args.ca, args.cert, args.key)
    options = {
        "timeout": args.timeout / 1000,
        "max_message": args.client_max_message,
        "registry": reg,
        "ssl_context": context,
    }
    if args.dns:
        import dns.resolver

        name, _, port = args.dns.rpartition(":") if ":" in args.dns else (args.dns, "", "")
        if port and not port.isdigit():
            raise UsageError(f"--dns {args.dns!r}: expected NAME or NAME:PORT")
        resolver = dns.resolver.Resolver(configure=args.dns_server is None)
        if args.dns_server is not None:
            host, _, server_port = args.dns_server.partition(":")
            resolver.nameservers = [host]
            resolver.port = int(server_port) if server_port.isdigit() else 53
        return Fleet.from_dns(
            name, int(port) if port else None, protocol, resolver=resolver, **options
        )
    servers = [s.strip() for s in (args.servers or "").split(",") if s.strip()]
    try:
        return Fleet(servers, protocol, **options)
    except ConfigError as exc:
        raise UsageError(f"--servers: {exc}") from None


def lease(args: argparse.Namespace, registry: ProtocolRegistry | None) -> int:
    """``lease SIZE`` on the fleet: prints the handle."""
    with connect_fleet(args, registry) as fleet:
        handle = fleet.lease(args.size, args.ttl)
    if args.json:
        server = f"{handle.server[0]}:{handle.server[1]}"
        lease_id = handle.lease_id if isinstance(handle.lease_id, int) else str(handle.lease_id)
        record = {"handle": str(handle), "server": server, "id": lease_id}
        print(json.dumps({**record, "size": args.size, "ttl_ms": args.ttl}))
    else:
        print(handle)
    return 0


def stats(args: argparse.Namespace, registry: ProtocolRegistry | None) -> int:
    """``stats`` of each server of the fleet; exit status 1 if any is unavailable."""
    with connect_fleet(args, registry) as fleet:
        figures = fleet.stats()
    records = {
        name: stats_record(value) if not isinstance(value, Exception) else {"error": str(value)}
        for name, value in figures.items()
    }
    if args.json:
        print(json.dumps({"servers": records}))
    for name, value in figures.items():
        if args.json:
            break
        if isinstance(value, Exception):
            print(f"{name}: {value}")
        else:
            print(
                f"{name}: {value.live_leases} leases, {value.used} of {value.arena_size} B used, "
                f"largest free block {value.largest_free} B, {value.connections} connections, "
                f"version {value.version}, up {format_duration(value.uptime_ms)}"
            )
    return 1 if any("error" in record for record in records.values()) else 0
