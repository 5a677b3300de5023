"""The ``memlease`` lease commands over the blocking client: lease, set, get, read, write,
renew, release, stat, stats, gets, cas, watch, hold. memlease.cli.main registers them and
turns their errors into exit statuses.
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import sys
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from memlease.cli import fleet_commands
from memlease.cli.stats_figures import stats_record
from memlease.core.errors import ProtocolError
from memlease.core.messages import (
    EndReason,
    IdKind,
    LeaseId,
    LeaseManyRequest,
    LeaseRequest,
    ReadRequest,
    RenewManyRequest,
    RenewRequest,
    Request,
    SetRequest,
    WriteRequest,
)
from memlease.protocol import (
    DEFAULT_MAX_MESSAGE,
    ProtocolRegistry,
    ProtocolSpec,
    load_protocols,
)
from memlease.units import format_duration, parse_duration, parse_size

if TYPE_CHECKING:
    from memlease.client.blocking import Client
    from memlease.client.fleet import Fleet

EXIT_OK = 0
DEFAULT_TTL = "5s"
DEFAULT_TIMEOUT_MS = 10_000


class UsageError(Exception):
    """A bad command line: one line, exit 2."""


Handler = Callable[[argparse.Namespace, ProtocolRegistry | None], int]


# ---------------------------------------------------------------- values


def _size(text: str) -> int:
    try:
        return parse_size(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"{text!r}: {exc}") from None


def _interval(text: str) -> float:
    try:
        seconds = parse_duration(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"{text!r}: {exc}") from None
    if not 0.05 <= seconds <= 3600:
        raise argparse.ArgumentTypeError(f"{text!r}: give 50ms to 1h")
    return seconds


def _count(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"{text!r} cannot be negative")
    return value


def _milliseconds(what: str) -> Callable[[str], int]:
    """An argparse type: a duration of at least 1 ms, as whole ms; ``what`` names it."""

    def parse(text: str) -> int:
        try:
            ms = round(parse_duration(text) * 1000)
        except ValueError as exc:
            raise argparse.ArgumentTypeError(f"{text!r}: {exc}") from None
        if ms < 1:
            raise argparse.ArgumentTypeError(f"{text!r}: {what} is at least 1ms")
        return ms

    return parse


_ttl_ms = _milliseconds("a ttl")
_timeout_ms = _milliseconds("a timeout")


def parse_lease_id(text: str, spec: ProtocolSpec) -> LeaseId:
    """``text`` as a lease id of ``spec``'s kind; UsageError saying what an id looks like."""
    if spec.id_kind is IdKind.UUID:
        try:
            return uuid.UUID(text)
        except ValueError:
            raise UsageError(
                f"bad lease id {text!r}: protocol {spec.name} ids are UUIDs "
                "(e.g. 1b4e28ba-2fa1-11d2-883f-0016d3cca427)"
            ) from None
    try:
        value = int(text)
    except ValueError:
        value = -1
    if not 0 < value < 2**31:
        raise UsageError(
            f"bad lease id {text!r}: protocol {spec.name} ids are positive integers below 2^31"
        )
    return value


def parse_server(text: str | None, default_port: int) -> tuple[str, int]:
    """``HOST``, ``HOST:PORT``, ``[V6ADDR]`` or ``[V6ADDR]:PORT``; the port defaults."""
    if text is None:
        return "127.0.0.1", default_port
    host, port = text, ""
    if text.startswith("["):
        host, _, rest = text[1:].partition("]")
        port = rest.removeprefix(":")
    elif text.count(":") == 1:
        host, _, port = text.partition(":")
    if not host or (port and not port.isdigit()) or (port and not 0 < int(port) < 65536):
        raise UsageError(f"--server {text!r}: expected HOST or HOST:PORT, e.g. 127.0.0.1:7411")
    return host, int(port) if port else default_port


# ---------------------------------------------------------------- the parser


def add_global_options(parser: argparse.ArgumentParser, *, default: bool) -> None:
    """The client options, on the main parser (with defaults) and on each command (without, so
    they may come before or after the command)."""

    def value(v: object) -> object:
        return v if default else argparse.SUPPRESS

    parser.add_argument(
        "--server",
        metavar="HOST:PORT",
        default=value(None),
        help="the server (default 127.0.0.1 and the protocol's default port)",
    )
    parser.add_argument(
        "--protocol",
        metavar="NAME",
        default=value(None),
        help="the wire protocol (default native, or uuid for a fleet; see `memlease protocols`)",
    )
    parser.add_argument(
        "--json", action="store_true", default=value(False), help="print one JSON object"
    )
    parser.add_argument(
        "--timeout",
        type=_timeout_ms,
        metavar="DURATION",
        default=value(DEFAULT_TIMEOUT_MS),
        help="give up on a connection or a reply after this long (default 10s)",
    )
    parser.add_argument(
        "--max-message",
        type=_size,
        dest="client_max_message",
        metavar="SIZE",
        default=value(DEFAULT_MAX_MESSAGE),
        help="the largest reply accepted (default 65540KiB); for a get of a lease above "
        "64 MiB, match the server's limits.max_message",
    )
    parser.add_argument(
        "--tls",
        action="store_true",
        default=value(False),
        help="speak TLS, checking the server's certificate (implied by --ca, --cert)",
    )
    parser.add_argument(
        "--ca",
        type=Path,
        metavar="PATH",
        default=value(None),
        help="PEM CA certificate(s) to trust for the server (default: the system's)",
    )
    parser.add_argument(
        "--cert",
        type=Path,
        metavar="PATH",
        default=value(None),
        help="PEM client certificate, for a server that requires mutual TLS",
    )
    parser.add_argument(
        "--key", type=Path, metavar="PATH", default=value(None), help="PEM key of --cert"
    )
    fleet_commands.add_fleet_options(parser, default=default)


def add_client_commands(commands: Any, parent: argparse.ArgumentParser) -> None:
    """Register the lease commands on ``commands`` (an argparse subparsers action);
    ``parent`` carries the client options."""

    def command(name: str, help: str, handler: Handler) -> argparse.ArgumentParser:
        sub: argparse.ArgumentParser = commands.add_parser(name, help=help, parents=[parent])
        sub.set_defaults(handler=handler)
        return sub

    lease = command("lease", "lease SIZE bytes; prints the lease id", _lease)
    lease.add_argument("size", type=_size, metavar="SIZE", help="e.g. 1024 or 64KiB")
    lease.add_argument(
        "--ttl",
        type=_ttl_ms,
        default=DEFAULT_TTL,
        metavar="DURATION",
        help=f"how long the lease lives (default {DEFAULT_TTL})",
    )
    lease.add_argument(
        "--count",
        type=_count,
        default=1,
        metavar="N",
        help="lease N regions in one request, all or none; prints one id per line (default 1)",
    )
    set_ = command("set", "write DATA at the start of a lease", _set)
    set_.add_argument("id", metavar="ID")
    _data_arguments(set_)
    get = command("get", "print a lease's whole region", _get)
    get.add_argument("id", metavar="ID")
    get.add_argument("--output", type=Path, metavar="PATH", help="write the bytes to PATH")
    read = command("read", "print LENGTH bytes from OFFSET", _read)
    read.add_argument("id", metavar="ID")
    read.add_argument("offset", type=_size, metavar="OFFSET", help="e.g. 0 or 4KiB")
    read.add_argument("length", type=_size, metavar="LENGTH", help="e.g. 100 or 1MiB")
    read.add_argument("--output", type=Path, metavar="PATH", help="write the bytes to PATH")
    write = command("write", "write DATA at OFFSET", _write)
    write.add_argument("id", metavar="ID")
    write.add_argument("offset", type=_size, metavar="OFFSET", help="e.g. 0 or 4KiB")
    _data_arguments(write)
    renew = command("renew", "give leases a new ttl from now (many ids: one request)", _renew)
    renew.add_argument("ids", nargs="+", metavar="ID")
    renew.add_argument("--ttl", type=_ttl_ms, required=True, metavar="DURATION")
    release = command("release", "free leases at once (many ids: one request)", _release)
    release.add_argument("ids", nargs="+", metavar="ID")
    command("stat", "a lease's size, remaining ttl and version", _stat).add_argument(
        "id", metavar="ID"
    )
    stats = command("stats", "the server's figures", _stats)
    stats.add_argument(
        "--arena-map",
        metavar="PATH",
        help="instead, draw the arena's blocks into PATH (a PNG, with the 'plot' extra); "
        "'-' or without matplotlib: print a text map",
    )
    top = command("top", "a live view of the server: ops/s by op, leases, arena, connections", _top)
    top.add_argument(
        "--count",
        type=_count,
        metavar="N",
        help="refresh N times, then exit (default: until Ctrl-C)",
    )
    top.add_argument(
        "--interval",
        type=_interval,
        default=1.0,
        metavar="DURATION",
        help="time between refreshes (default 1s)",
    )
    gets = command("gets", "print a lease's version, then its whole region", _gets)
    gets.add_argument("id", metavar="ID")
    gets.add_argument("--output", type=Path, metavar="PATH", help="write the bytes to PATH")
    cas = command("cas", "write DATA only if the lease is at VERSION; prints the new version", _cas)
    cas.add_argument("id", metavar="ID")
    cas.add_argument("version", type=_count, metavar="VERSION")
    cas.add_argument("--offset", type=_size, default=0, metavar="OFFSET", help="default 0")
    _data_arguments(cas)
    watch = command(
        "watch",
        "print a line as each lease ends (expired, released, closed), until interrupted or "
        "all have ended",
        _watch,
    )
    watch.add_argument("ids", nargs="+", metavar="ID")
    hold = command(
        "hold",
        "lease SIZE bound to this command: prints its id, renews it, and the server releases "
        "it when the command ends (Ctrl-C, kill, crash)",
        _hold,
    )
    hold.add_argument("size", type=_size, metavar="SIZE", help="e.g. 1024 or 64KiB")
    hold.add_argument(
        "--ttl",
        type=_ttl_ms,
        default=DEFAULT_TTL,
        metavar="DURATION",
        help="the lease's ttl, renewed at half of it while the command runs "
        f"(default {DEFAULT_TTL})",
    )


def _data_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("data", nargs="?", metavar="DATA", help="the bytes as text; - for stdin")
    parser.add_argument("--file", type=Path, metavar="PATH", help="the bytes of a file")


# ---------------------------------------------------------------- the commands


def _connect(
    args: argparse.Namespace,
    registry: ProtocolRegistry | None,
    request: Callable[[argparse.Namespace, ProtocolSpec], Request] | None = None,
) -> Client | Fleet:
    """The fleet the options name, or a client for the command's server (see
    :func:`_connect_one`)."""
    if fleet_commands.wants_fleet(args):
        return fleet_commands.connect_fleet(args, registry)
    return _connect_one(args, registry, request)


def _connect_one(
    args: argparse.Namespace,
    registry: ProtocolRegistry | None,
    request: Callable[[argparse.Namespace, ProtocolSpec], Request] | None = None,
) -> Client:
    """A client for the command's server; ``request`` builds the request the command will
    send, checked against the protocol's fields before anything is sent."""
    from memlease.client.blocking import Client

    reg = registry or load_protocols()
    spec = _spec(args, reg)
    address = parse_server(args.server, spec.default_port)
    args.id = parse_lease_id(args.id, spec) if "id" in args else None
    if "ids" in args:
        args.ids = [parse_lease_id(text, spec) for text in args.ids]
    _check_encodable(args, spec, request)
    context = None
    if args.tls or args.ca is not None or args.cert is not None or args.key is not None:
        from memlease.tls import client_context

        context = client_context(args.ca, args.cert, args.key)
    return Client(
        address,
        spec.name,
        timeout=args.timeout / 1000,
        max_message=args.client_max_message,
        registry=reg,
        ssl_context=context,
    )


def _check_encodable(
    args: argparse.Namespace,
    spec: ProtocolSpec,
    request: Callable[[argparse.Namespace, ProtocolSpec], Request] | None,
) -> None:
    """A usage error for a number outside the protocol's field, or a --max-message below its
    header, found by encoding with a codec of our own before connecting."""
    try:
        codec = spec.client_codec(args.client_max_message)
    except ValueError as exc:
        raise UsageError(f"memlease: --max-message {args.client_max_message}: {exc}") from None
    if request is None:
        return
    try:
        codec.encode_request(request(args, spec))
    except ProtocolError as exc:
        raise UsageError(f"memlease {args.command}: {exc}") from None


def _spec(args: argparse.Namespace, registry: ProtocolRegistry) -> ProtocolSpec:
    try:
        return registry.get(args.protocol or "native")
    except KeyError as exc:
        raise UsageError(f"memlease: --protocol: {exc.args[0]}") from None


def _print(args: argparse.Namespace, text: str, record: dict[str, Any]) -> int:
    if args.json:
        print(json.dumps(record))
    else:
        print(text)
    return EXIT_OK


def _id(lease_id: LeaseId) -> int | str:
    return lease_id if isinstance(lease_id, int) else str(lease_id)


def _lease(args: argparse.Namespace, registry: ProtocolRegistry | None) -> int:
    if args.count < 1:
        raise UsageError("memlease lease: --count is at least 1")
    if fleet_commands.wants_fleet(args):
        if args.count > 1:
            raise UsageError("memlease lease: --count is for one server, not a fleet")
        return fleet_commands.lease(args, registry)

    def request(a: argparse.Namespace, spec: ProtocolSpec) -> Request:
        if a.count > 1:
            return LeaseManyRequest(a.count, a.size, a.ttl, spec.id_kind)
        return LeaseRequest(a.size, a.ttl, spec.id_kind)

    with _connect_one(args, registry, request) as client:
        if args.count == 1:
            granted = [client.lease(args.size, args.ttl)]
        else:
            granted = client.lease_many(args.count, args.size, args.ttl)
    if args.json:
        for one in granted:
            print(json.dumps({"id": _id(one.lease_id), "size": one.size, "ttl_ms": one.ttl_ms}))
    else:
        print("\n".join(str(one.lease_id) for one in granted))
    return EXIT_OK


def _input_data(args: argparse.Namespace) -> bytes:
    if args.file is not None:
        if args.data is not None:
            raise UsageError(f"memlease {args.command}: give DATA or --file, not both")
        try:
            return args.file.read_bytes()  # type: ignore[no-any-return]
        except OSError as exc:
            raise UsageError(
                f"memlease {args.command}: --file {args.file}: {exc.strerror}"
            ) from None
    if args.data is None:
        raise UsageError(f"memlease {args.command}: give DATA, --file PATH, or - for stdin")
    if args.data == "-":
        return sys.stdin.buffer.read()
    return args.data.encode()  # type: ignore[no-any-return]


def _set(args: argparse.Namespace, registry: ProtocolRegistry | None) -> int:
    data = _input_data(args)
    with _connect(args, registry, lambda a, _: SetRequest(a.id, data)) as client:
        version = client.set(args.id, data)
    record = {"id": _id(args.id), "op": "set", "bytes": len(data), "version": version or None}
    # native's set is the original exchange, which does not carry the version
    shown = f" (version {version})" if version else ""
    return _print(args, f"set {len(data)} bytes of lease {args.id}{shown}", record)


def _write(args: argparse.Namespace, registry: ProtocolRegistry | None) -> int:
    data = _input_data(args)
    with _connect(args, registry, lambda a, _: WriteRequest(a.id, a.offset, data)) as client:
        version = client.write(args.id, args.offset, data)
    record = {
        "id": _id(args.id),
        "op": "write",
        "offset": args.offset,
        "bytes": len(data),
        "version": version,
    }
    text = f"wrote {len(data)} bytes at {args.offset} of lease {args.id} (version {version})"
    return _print(args, text, record)


def _get(args: argparse.Namespace, registry: ProtocolRegistry | None) -> int:
    with _connect(args, registry) as client:
        data = client.get(args.id)
    return _output(args, data)


def _read(args: argparse.Namespace, registry: ProtocolRegistry | None) -> int:
    with _connect(args, registry, lambda a, _: ReadRequest(a.id, a.offset, a.length)) as client:
        data = client.read(args.id, args.offset, args.length)
    return _output(args, data)


def _output(args: argparse.Namespace, data: bytes) -> int:
    if args.output is not None:
        try:
            args.output.write_bytes(data)
        except OSError as exc:
            raise UsageError(f"memlease: --output {args.output}: {exc.strerror}") from None
    if args.json:
        text = _text(data)
        record = {
            "id": _id(args.id),
            "size": len(data),
            "text": text,
            "base64": base64.b64encode(data).decode(),
        }
        print(json.dumps(record))
    elif args.output is None and sys.stdout.isatty():
        # A terminal shows the region as the original client did, as a C string; control
        # characters as escapes, so that bytes another tenant stored cannot drive it.
        print(terminal_safe(data.rstrip(b"\0").decode(errors="replace")))
    elif args.output is None:
        _write_raw(data)
    return EXIT_OK


def _write_raw(data: bytes) -> None:
    """All of ``data`` to stdout; BrokenPipeError once its reader is gone."""
    sys.stdout.flush()
    try:
        fd = sys.stdout.fileno()
    except (AttributeError, OSError):  # a replaced stdout (tests capture it)
        sys.stdout.buffer.write(data)
        sys.stdout.buffer.flush()
        return
    # os.write in a loop, not the buffered writer: when a reader leaves mid-write, the pipe
    # takes part of a write, and the buffered writer was seen to drop the rest silently
    # (exit 0, no error) instead of meeting the closed pipe on the next write.
    with memoryview(data) as view:
        while view:
            view = view[os.write(fd, view) :]


_CONTROL = {
    code: f"\\x{code:02x}" for code in (*range(0x20), *range(0x7F, 0xA0)) if chr(code) not in "\n\t"
}


def terminal_safe(text: str) -> str:
    """``text`` with every control character but newline and tab written as ``\\xNN``."""
    return text.translate(_CONTROL)


def _text(data: bytes) -> str | None:
    try:
        return data.rstrip(b"\0").decode()
    except UnicodeDecodeError:
        return None


def _figure(value: object) -> str:
    """A stats figure as a person reads it: a ratio to three decimals (JSON keeps all)."""
    return f"{value:.3f}" if isinstance(value, float) else str(value)


def _renew(args: argparse.Namespace, registry: ProtocolRegistry | None) -> int:
    if len(args.ids) == 1:
        # One id (or a fleet's handle): the single renew, and its own error.
        args.id = args.ids[0]
        with _connect(args, registry, lambda a, _: RenewRequest(a.id, a.ttl)) as client:
            client.renew(args.id, args.ttl)
        args.ids = [args.id]
        missing: list[LeaseId] = []
    else:
        check = lambda a, _: RenewManyRequest(a.ids, a.ttl)  # noqa: E731
        with _connect_one(_one_server(args), registry, check) as client:
            missing = client.renew_many(args.ids, args.ttl)
    return _many_done(args, "renewed", missing, {"ttl_ms": args.ttl}, f" for {args.ttl} ms")


def _release(args: argparse.Namespace, registry: ProtocolRegistry | None) -> int:
    if len(args.ids) == 1:
        args.id = args.ids[0]
        with _connect(args, registry) as client:
            client.release(args.id)
        args.ids = [args.id]
        missing: list[LeaseId] = []
    else:
        with _connect_one(_one_server(args), registry) as client:
            missing = client.release_many(args.ids)
    return _many_done(args, "released", missing, {}, "")


def _one_server(args: argparse.Namespace) -> argparse.Namespace:
    """``args`` for a command on one server only; UsageError if they name a fleet."""
    ids = getattr(args, "ids", [])
    if args.servers or args.dns or any("/" in str(lease_id) for lease_id in ids):
        raise UsageError(
            f"memlease {args.command}: over a fleet, give one handle per command "
            "(many ids in one request go to one server: --server)"
        )
    return args


def _many_done(
    args: argparse.Namespace,
    verb: str,
    missing: list[LeaseId],
    extra: dict[str, Any],
    detail: str,
) -> int:
    """One line for what was done; the ids not found on stderr and exit 1, as rm does."""
    not_found = set(missing)
    done = [lease_id for lease_id in dict.fromkeys(args.ids) if lease_id not in not_found]
    op = verb.removesuffix("d").removesuffix("e")
    record: dict[str, Any] = {
        "op": op,
        "ids": [_id(i) for i in done],
        "not_found": [_id(i) for i in missing],
    }
    if len(args.ids) == 1:
        text = f"{verb} lease {args.ids[0]}{detail}"
        record = {"id": _id(args.ids[0]), "op": op}
    else:
        text = f"{verb} {len(done)} of {len(done) + len(not_found)} leases{detail}"
    _print(args, text, record | extra)
    if missing:
        print(
            "memlease: not found (expired, released or never granted): "
            + " ".join(str(i) for i in missing),
            file=sys.stderr,
        )
        return 1
    return EXIT_OK


def _stat(args: argparse.Namespace, registry: ProtocolRegistry | None) -> int:
    with _connect(args, registry) as client:
        info = client.stat(args.id)
    record = {
        "id": _id(info.lease_id),
        "size": info.size,
        "ttl_ms": info.ttl_ms,
        "version": info.version,
    }
    text = f"lease {args.id}: {info.size} bytes, {info.ttl_ms} ms left, version {info.version}"
    return _print(args, text, record)


def _stats(args: argparse.Namespace, registry: ProtocolRegistry | None) -> int:
    if args.arena_map is not None:
        return _arena_map(args, registry)
    if fleet_commands.wants_fleet(args):
        return fleet_commands.stats(args, registry)
    with _connect_one(args, registry) as client:
        stats = client.stats()
    record = stats_record(stats)
    shown: dict[str, object] = {**record, "uptime_ms": format_duration(stats.uptime_ms)}
    mean = f", mean {stats.expiry_lag_us / stats.expired / 1000:,.3f} ms" if stats.expired else ""
    shown["expiry_lag_us"] = f"{stats.expiry_lag_us / 1000:,.3f} ms in all{mean}"
    shown["expiry_behind_us"] = f"{stats.expiry_behind_us / 1000:,.3f} ms"
    del shown["requests"]  # shown last: the longest line
    shown["requests"] = ", ".join(f"{op} {n}" for op, n in stats.requests_by_op().items() if n)
    names = {
        "uptime_ms": "uptime",
        "expiry_lag_us": "expiry lag",
        "expiry_behind_us": "expiry behind",
    }
    width = max(map(len, record))
    text = "\n".join(
        f"{names.get(name, name).replace('_', ' '):<{width}}  {_figure(value)}"
        for name, value in shown.items()
    )
    return _print(args, text, record)


def _arena_map(args: argparse.Namespace, registry: ProtocolRegistry | None) -> int:
    from memlease.cli import arena_map

    if fleet_commands.wants_fleet(args):
        raise UsageError("memlease stats --arena-map: draws one server's arena; give one --server")
    with _connect_one(args, registry) as client:
        got = client.arena_map()
        server = client.peer
    if args.json:
        record = {
            "arena_size": got.size,
            "min_block": got.min_block,
            "cell_bytes": got.cell_bytes,
            "cells": base64.b64encode(got.cells).decode(),
        }
        print(json.dumps(record))
        return EXIT_OK
    arena_map.show(got, args.arena_map, server)
    return EXIT_OK


def _top(args: argparse.Namespace, registry: ProtocolRegistry | None) -> int:
    from memlease.cli.top import run_top

    if args.servers or args.dns:
        raise UsageError("memlease top: shows one server; name it with --server")
    try:
        with _connect_one(args, registry) as client:
            run_top(
                client.stats,
                client.peer,
                _spec(args, registry or load_protocols()).name,
                interval=args.interval,
                count=args.count,
            )
    except KeyboardInterrupt:
        pass  # Ctrl-C is how a live view ends
    return EXIT_OK


def _gets(args: argparse.Namespace, registry: ProtocolRegistry | None) -> int:
    with _connect(args, registry) as client:
        data, version = client.gets(args.id)
    if args.json:
        record = {
            "id": _id(args.id),
            "version": version,
            "size": len(data),
            "text": _text(data),
            "base64": base64.b64encode(data).decode(),
        }
        print(json.dumps(record))
        return EXIT_OK
    print(f"version {version}", flush=True)
    return _output(args, data)


def _cas(args: argparse.Namespace, registry: ProtocolRegistry | None) -> int:
    data = _input_data(args)
    with _connect(args, registry) as client:
        version = client.cas(args.id, args.version, data, args.offset)
    record = {"id": _id(args.id), "op": "cas", "bytes": len(data), "version": version}
    return _print(args, f"wrote {len(data)} bytes of lease {args.id} (version {version})", record)


def _watch(args: argparse.Namespace, registry: ProtocolRegistry | None) -> int:
    with _connect_one(_one_server(args), registry) as client:
        client.watch(args.ids)
        waiting = set(args.ids)
        while waiting:
            notice = client.next_notice()
            if notice is None:  # pragma: no cover - no timeout: only a notice returns
                continue
            waiting.discard(notice.lease_id)
            reason = notice.reason.name.lower()
            record = {"id": _id(notice.lease_id), "reason": reason}
            _print(args, f"lease {notice.lease_id} {_ENDED[notice.reason]}", record)
            sys.stdout.flush()
    return EXIT_OK


_ENDED = {
    EndReason.EXPIRED: "expired",
    EndReason.RELEASED: "released",
    EndReason.CLOSED: "released: its bound connection closed",
}


def _hold(args: argparse.Namespace, registry: ProtocolRegistry | None) -> int:
    with _connect_one(_one_server(args), registry) as client:
        granted = client.lease(args.size, args.ttl, bound=True)
        lease_id = granted.lease_id
        client.watch(lease_id)  # told if someone releases it meanwhile
        record = {"id": _id(lease_id), "size": granted.size, "ttl_ms": granted.ttl_ms}
        _print(args, str(lease_id), record)
        sys.stdout.flush()  # a script reads the id while this still runs
        while True:
            notice = client.next_notice(timeout=args.ttl / 2000)
            if notice is not None:
                print(f"memlease: lease {lease_id} {_ENDED[notice.reason]}", file=sys.stderr)
                return 1
            client.renew(lease_id, args.ttl)
