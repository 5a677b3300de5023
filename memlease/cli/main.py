"""The ``memlease`` command: serve, the lease commands over the blocking client, protocols,
bench.

Exit status: 0 ok; 1 a refusal or failure from the server or the connection; 2 a usage or
configuration error. Every failure is one line on stderr saying what happened.
"""

from __future__ import annotations

import argparse
import errno
import importlib
import json
import os
import socket
import sys
import tomllib
from collections.abc import Sequence
from functools import partial
from pathlib import Path
from typing import NoReturn

from memlease import __version__
from memlease.build import build_kind
from memlease.cli.client_commands import (
    EXIT_OK,
    Handler,
    UsageError,
    add_client_commands,
    add_global_options,
)
from memlease.core.errors import ConfigError, LeaseNotFound, MemleaseError, not_found_message
from memlease.protocol import ProtocolRegistry, load_protocols
from memlease.server.config import FLAGS, Config, load_config, packaged_default_text
from memlease.server.config_values import Listener

EXIT_FAILED = 1
EXIT_USAGE = 2
EXIT_PIPE_CLOSED = 128 + 13
"""As a process killed by SIGPIPE: what a shell shows for ``seq 9999999 | head -1``'s seq."""


class _Parser(argparse.ArgumentParser):
    """Reports a bad command line in one line (argparse's default adds the whole usage)."""

    def error(self, message: str) -> NoReturn:
        raise UsageError(f"{self.prog}: {message} (see {self.prog} --help)")


# ---------------------------------------------------------------- the parser


def build_parser() -> _Parser:
    parser = _Parser(prog="memlease", description="Lease remote memory.")
    parser.add_argument(
        "--version", "-V", action="version", version=f"memlease {__version__} ({build_kind()})"
    )
    add_global_options(parser, default=True)
    client = _Parser(add_help=False)
    add_global_options(client, default=False)
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    serve = commands.add_parser(
        "serve",
        help="run a server",
        description="Run a server. Flags override the config file; the defaults shown are the "
        "packaged config's (conf/server.toml).",
    )
    default = _packaged_defaults()

    def flag(name: str, metavar: str, text: str, key: str | None = None, **kw: object) -> None:
        shown = default.get(key) if key else None
        suffix = f" (default {shown})" if shown is not None else ""
        serve.add_argument(name, metavar=metavar, help=text + suffix, **kw)  # type: ignore[arg-type]

    serve.add_argument(
        "--config",
        type=Path,
        metavar="PATH",
        help="a TOML config file (default: the packaged conf/server.toml)",
    )
    flag("--host", "HOST", "the address to bind", "host")
    flag("--arena", "SIZE", "bytes to lease out", "arena.size")
    serve.add_argument(
        "--listen",
        action="append",
        metavar="PROTOCOL=PORT",
        help="serve PROTOCOL on PORT; repeatable; replaces the file's listeners (default "
        f"{default.get('listener', 'none')})",
    )
    flag("--max-connections", "N", "connections open at once", "limits.max_connections")
    flag(
        "--max-connections-per-client",
        "N",
        "connections one source address may hold (default: max-connections / 4; 0: any)",
    )
    flag(
        "--request-timeout",
        "DURATION",
        "time to receive one whole message once its first byte came",
        "limits.request_timeout",
    )
    flag(
        "--idle-timeout",
        "DURATION",
        "a connection with no message this long is closed",
        "limits.idle_timeout",
    )
    flag(
        "--max-unknown-ids-per-second",
        "N",
        "requests for unknown ids a connection may make in a second; 0: any",
        "limits.max_unknown_ids_per_second",
    )
    flag("--max-ttl", "DURATION", "longest ttl of a lease or renewal", "limits.max_ttl")
    flag("--max-message", "SIZE", "largest message, checked on its header", "limits.max_message")
    flag(
        "--connection-memory",
        "SIZE",
        "memory all connections together may hold beyond the arena",
        "limits.connection_memory",
    )
    flag("--log-level", "LEVEL", "debug, info, warning, error or critical", "log_level")
    flag(
        "--log-format",
        "FORMAT",
        "text, or json: one JSON object per line (time, level, logger, message, peer)",
        "log_format",
    )
    flag(
        "--shards",
        "N",
        "run N server processes, a core and 1/N of the arena each, on consecutive ports",
        "shards",
    )
    flag("--tls-cert", "PATH", "PEM certificate: serve TLS (default: no TLS)")
    flag("--tls-key", "PATH", "PEM private key of --tls-cert")
    flag("--tls-client-ca", "PATH", "PEM CA(s): require client certificates (default: none)")
    flag(
        "--tls-handshake-timeout",
        "DURATION",
        "time a TLS handshake may take from accept",
        "limits.tls_handshake_timeout",
    )
    flag(
        "--metrics",
        "HOST:PORT",
        "serve Prometheus metrics at http://HOST:PORT/metrics; a port alone listens on "
        "127.0.0.1; shard i of a sharded server on PORT + i (default: off)",
    )
    serve.set_defaults(handler=_serve)

    add_client_commands(commands, client)
    protocols = commands.add_parser("protocols", help="list the installed protocols")
    protocols.add_argument("--json", action="store_true", default=argparse.SUPPRESS)
    protocols.set_defaults(handler=_protocols)
    # memlease.bench is imported only when asked for, so a missing or broken bench package
    # never slows or breaks the other commands; its own parser takes the remaining arguments.
    bench = commands.add_parser(
        "bench", help="run the benchmark (memlease bench --help)", add_help=False
    )
    bench.set_defaults(handler=_bench)
    return parser


def _packaged_defaults() -> dict[str, str]:
    """The packaged config's values by file key ("limits.max_ttl": "24h"), as help shows
    them: read from the file itself, so that help and file cannot disagree."""
    document = tomllib.loads(packaged_default_text())
    shown: dict[str, str] = {}
    for key, value in document.items():
        if key == "listener":
            shown[key] = ", ".join(f"{t['protocol']}={t['port']}" for t in value)
        elif isinstance(value, dict):
            shown.update({f"{key}.{sub}": str(v) for sub, v in value.items()})
        else:
            shown[key] = str(value)
    return shown


# ---------------------------------------------------------------- main


def main(argv: Sequence[str] | None = None, *, registry: ProtocolRegistry | None = None) -> int:
    """Run the ``memlease`` command; returns its exit status. ``registry`` is for tests."""
    parser = build_parser()
    try:
        try:
            args, extra = parser.parse_known_args(argv)
        except SystemExit as exit_:  # --help and --version print and exit
            return exit_.code if isinstance(exit_.code, int) else EXIT_OK
        if extra and args.command != "bench":
            parser.error(f"unrecognized arguments: {' '.join(extra)}")
        args.extra = extra
        handler: Handler = args.handler
        status = handler(args, registry)
        # Flushed here, so that a reader gone away is met below, not at interpreter exit.
        sys.stdout.flush()
        return status
    except BrokenPipeError:
        return _stdout_closed()
    except UsageError as exc:
        message = str(exc)
        prefixed = message if message.startswith("memlease") else f"memlease: {message}"
        return _fail(prefixed, EXIT_USAGE)
    except ConfigError as exc:
        return _fail(f"memlease: {exc}", EXIT_USAGE)
    except LeaseNotFound as exc:
        lease_id = getattr(args, "id", None)
        # A request on many ids: the server's message names the one it did not find.
        return _fail(f"memlease: {not_found_message(lease_id) if lease_id else exc}")
    except MemleaseError as exc:
        return _fail(f"memlease: {_one_line(str(exc)) or type(exc).__doc__}")
    except OSError as exc:
        return _fail(f"memlease: {exc.strerror or exc}")
    except KeyboardInterrupt:
        return _fail("memlease: interrupted", 130)


def _stdout_closed() -> int:
    """The reader of stdout went away (``memlease stats | head -1``): stop quietly, as a Unix
    filter killed by SIGPIPE does, with its status."""
    # What is still buffered for the closed pipe would fail again at exit: send it nowhere.
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())
    os.close(devnull)
    return EXIT_PIPE_CLOSED


def _fail(message: str, status: int = EXIT_FAILED) -> int:
    print(_one_line(message), file=sys.stderr)
    return status


def _one_line(text: str) -> str:
    return " ".join(text.split())


# ---------------------------------------------------------------- serve


def _serve(args: argparse.Namespace, registry: ProtocolRegistry | None) -> int:
    flag_values = {
        "host": args.host,
        "listeners": args.listen,
        "arena_size": args.arena,
        "max_connections": args.max_connections,
        "max_connections_per_client": args.max_connections_per_client,
        "request_timeout": args.request_timeout,
        "idle_timeout": args.idle_timeout,
        "max_unknown_ids_per_second": args.max_unknown_ids_per_second,
        "max_ttl_ms": args.max_ttl,
        "max_message": args.max_message,
        "connection_memory": args.connection_memory,
        "log_level": args.log_level,
        "log_format": args.log_format,
        "shards": args.shards,
        "tls_certificate": args.tls_cert,
        "tls_key": args.tls_key,
        "tls_client_ca": args.tls_client_ca,
        "handshake_timeout": args.tls_handshake_timeout,
        "metrics_listen": args.metrics,
    }
    assert set(flag_values) == set(FLAGS)
    overrides = {name: value for name, value in flag_values.items() if value is not None}
    config = load_config(args.config, overrides, registry=registry)
    # The trio shell loads only when serving, so the client commands start fast.
    server = importlib.import_module("memlease.server.run")
    # SIGHUP reads the same file again, with the same flags on top.
    reload = partial(load_config, args.config, overrides, registry=registry)
    if config.shards > 1:
        return int(importlib.import_module("memlease.server.shards").supervise(config, reload))
    try:
        return int(server.run(config, reload))
    except (OSError, BaseExceptionGroup) as exc:
        bind_error = _find_os_error(exc)
        if bind_error is None:
            raise
        return _fail(f"memlease serve: {_bind_failure(config, bind_error)}", EXIT_USAGE)


def _find_os_error(exc: BaseException) -> OSError | None:
    if isinstance(exc, OSError):
        return exc
    if isinstance(exc, BaseExceptionGroup):
        for inner in exc.exceptions:
            found = _find_os_error(inner)
            if found is not None:
                return found
    return None


def _bind_failure(config: Config, error: OSError) -> str:
    """Name the listener that could not bind, found by probing each configured port, since
    the OSError from deep in the server may not say which."""
    if isinstance(error, socket.gaierror) or (error.errno or 0) < 0:
        # getaddrinfo's errors are not errno values: os.strerror says "Unknown error -2"
        return f"cannot resolve host {config.host!r}: {error.strerror or error}"
    reason = os.strerror(error.errno) if error.errno else str(error)
    for listener in config.listeners:
        if listener.port and not _can_bind(config.host, listener):
            return (
                f"listener {listener.protocol}={listener.port}: cannot listen on "
                f"{config.host}:{listener.port}: {reason}"
            )
    return error.strerror or str(error)


def _can_bind(host: str, listener: Listener) -> bool:
    try:
        infos = socket.getaddrinfo(host, listener.port, type=socket.SOCK_STREAM)
    except OSError:
        return False
    for family, kind, proto, _, address in infos:
        with socket.socket(family, kind, proto) as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                probe.bind(address)
            except OSError as exc:
                return exc.errno not in (errno.EADDRINUSE, errno.EACCES)
    return True


# ---------------------------------------------------------------- protocols, bench


def _protocols(args: argparse.Namespace, registry: ProtocolRegistry | None) -> int:
    reg = registry or load_protocols(warn=False)
    rows = [
        {
            "name": name,
            "id_kind": entry.spec.id_kind.value,
            "default_port": entry.spec.default_port,
            "distribution": entry.distribution,
            "description": entry.spec.description,
        }
        for name, entry in sorted(reg.protocols.items())
    ]
    if getattr(args, "json", False):
        print(json.dumps({"protocols": rows, "problems": reg.problems}))
    else:
        headers = {
            "name": "NAME",
            "id_kind": "ID",
            "default_port": "PORT",
            "distribution": "DISTRIBUTION",
            "description": "DESCRIPTION",
        }
        table = [headers, *({k: str(v) for k, v in row.items()} for row in rows)]
        widths = {k: max(len(str(r[k])) for r in table) for k in headers}
        for row in table:
            print("  ".join(f"{row[k]:<{widths[k]}}" for k in headers).rstrip())
        if not rows:
            print("(no protocols installed)")
        for problem in reg.problems:
            print(f"problem: {problem}")
    return EXIT_OK


def _bench(args: argparse.Namespace, registry: ProtocolRegistry | None) -> int:
    parser = _Parser(prog="memlease bench", description="Benchmark a memlease server.")
    try:
        bench = importlib.import_module("memlease.bench")
        bench.add_arguments(parser)
    except Exception as exc:
        reason = f"{type(exc).__name__}: {exc}"
        return _fail(f"memlease bench: the benchmark is not available ({reason})", EXIT_USAGE)
    try:
        bench_args = parser.parse_args(args.extra)
    except SystemExit as exit_:
        return exit_.code if isinstance(exit_.code, int) else EXIT_OK
    return int(bench.run(bench_args))


if __name__ == "__main__":
    sys.exit(main())
