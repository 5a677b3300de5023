"""The protocol plugin interface, its pluggy hook specification, and the plugin manager.

A protocol is a wire format: a name, the kind of lease id it carries, a default port, and
sans-IO codecs for both ends of a connection. Built-in and third-party protocols alike are
found through the ``memlease.protocols`` entry-point group; memlease's core imports none of
them by name.

A third-party package provides one like this::

    # my_protocol/__init__.py
    from memlease.protocol import hookimpl, ProtocolSpec

    @hookimpl
    def memlease_protocols() -> list[ProtocolSpec]:
        return [ProtocolSpec(name="mine", ...)]

    # its pyproject.toml
    [project.entry-points."memlease.protocols"]
    mine = "my_protocol"
"""

from __future__ import annotations

import abc
import functools
import importlib.metadata
import sys
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import cast

import pluggy

from memlease.core.messages import IdKind, Reply, Request

ENTRY_POINT_GROUP = "memlease.protocols"
PROJECT_NAME = "memlease"

hookspec = pluggy.HookspecMarker(PROJECT_NAME)
hookimpl = pluggy.HookimplMarker(PROJECT_NAME)

DEFAULT_MAX_MESSAGE = 64 * 1024 * 1024 + 4096
"""Largest message a decoder accepts unless told otherwise: a 64 MiB payload plus headers."""


Bytes = bytes | bytearray | memoryview


class ServerCodec(abc.ABC):
    """The server's end of one connection: bytes in, requests out; replies in, bytes out.
    One object per connection; it keeps the bytes of a message not yet whole.

    Subclass it. A codec must give the four abstract methods: they are all the server needs
    to serve it with the same rules and time limits as the built-in protocols. It may give
    the others for speed; their defaults here behave the same, only slower.
    """

    __slots__ = ()

    # ------------------------------------------------------------------ must give

    @abc.abstractmethod
    def feed(self, data: bytes) -> None:
        """Append received bytes, in any chunking."""

    @abc.abstractmethod
    def next_request(self) -> Request | None:
        """The next whole request, or None until more bytes arrive.

        Raises ProtocolError when the buffered bytes cannot be a valid request (bad type,
        a length above the decoder's max message size, a short or inconsistent payload).
        After a ProtocolError the codec is unusable: the connection is closed.
        """

    @abc.abstractmethod
    def encode_reply(self, reply: Reply) -> bytes:
        """The bytes of ``reply``, a copy of any data it holds (a Data reply's data may be a
        view of a lease's block, which the next request can change). An ErrorReply without
        ``op`` answers bytes that could not be parsed; a protocol with no way to say so
        returns b""."""

    @abc.abstractmethod
    def buffered(self) -> int:
        """How many bytes the codec holds of a message not yet whole (0 between messages).

        The server's time limits rest on it: while it is above 0 a message is arriving and
        must be whole within the request timeout; at 0 the connection is idle."""

    # ------------------------------------------------------------------ may give, for speed

    def next_requests(self, into: list[Request], most: int) -> None:
        """Append the whole requests received, up to ``most``, to ``into`` in order: what
        as many :meth:`next_request` calls give, in one call (the server asks for a
        receive's requests at once). Fewer than ``most`` means no whole request is left
        until more bytes arrive: the server need not ask again before then (it may, and
        then gets none). Raises
        ProtocolError as :meth:`next_request` does, the requests before the malformed one
        appended first: they are served before the connection closes."""
        next_request = self.next_request
        for _ in range(most):
            request = next_request()
            if request is None:
                return
            into.append(request)

    copies_fed_bytes: bool = False
    """True when :meth:`feed` copies what it is given: the server may then pass a view of
    its shared receive buffer instead of bytes of its own."""

    def receive_buffer(self) -> memoryview | None:
        """While a large message is arriving, where the server should read its next bytes
        (the rest of that message's own buffer; report them with :meth:`received`); None to
        have them fed. A request's data may then be a read-only view of that buffer."""
        return None

    def received(self, count: int) -> None:
        """``count`` bytes were read into the front of :meth:`receive_buffer`'s view."""
        raise NotImplementedError("received() without a receive_buffer()")

    def memory(self) -> int:
        """Bytes the codec holds in memory for messages not yet whole, buffers it made for
        them included; the server counts them against its connection memory budget."""
        return self.buffered()

    def limit_memory(self, may_hold: Callable[[int], bool]) -> None:
        """From now on, ask ``may_hold(n)`` before making a buffer of ``n`` bytes for a
        message not yet received (as a large message's own buffer), and do without it when
        the answer is False. A codec that only holds what it was fed needs nothing here."""
        return

    def encode_reply_parts(self, reply: Reply) -> Sequence[Bytes]:
        """The bytes of ``reply`` as parts to send in order. A part may be a view of a Data
        reply's data, so that a large get goes out without a copy: the server sends such a
        reply before it handles the next request."""
        return (self.encode_reply(reply),)


class ClientCodec(abc.ABC):
    """The client's end of one connection: requests in, bytes out; bytes in, replies out.

    Replies come back in request order; the codec may use the order of encoded requests to
    interpret replies whose form depends on the request (as the native format's do).
    """

    __slots__ = ()

    @abc.abstractmethod
    def encode_request(self, request: Request) -> bytes:
        """The bytes of ``request``. Raises ProtocolError for a request the format cannot
        carry (e.g. a UUID id on an int-id protocol)."""

    @abc.abstractmethod
    def feed(self, data: bytes) -> None:
        """Append received bytes, in any chunking."""

    @abc.abstractmethod
    def next_reply(self) -> Reply | None:
        """The next whole reply, or None until more bytes arrive. Raises ProtocolError."""


@dataclass(frozen=True)
class ProtocolSpec:
    """What a protocol plugin provides.

    :param name: the protocol's name, unique among all installed plugins; what users pass as
        ``--protocol`` and what config listeners name.
    :param id_kind: the kind of lease id the protocol carries; each kind is its own id space.
    :param default_port: the TCP port a listener of this protocol uses unless told otherwise.
    :param description: one line for ``memlease protocols``.
    :param server_codec: ``server_codec(max_message)`` makes a fresh :class:`ServerCodec` for
        one connection.
    :param client_codec: ``client_codec(max_message)`` makes a fresh :class:`ClientCodec`.

    ``max_message`` bounds every length field, checked before any buffer of that size exists.
    Codecs are sans-IO: they never touch a socket or a clock.
    """

    name: str
    id_kind: IdKind
    default_port: int
    description: str
    server_codec: Callable[[int], ServerCodec]
    client_codec: Callable[[int], ClientCodec]


class ProtocolHookSpecs:
    """The hooks a protocol plugin may implement (mark implementations with ``hookimpl``)."""

    @hookspec
    def memlease_protocols(self) -> list[ProtocolSpec]:  # type: ignore[empty-body]
        """Return the protocols this plugin provides.

        :return: a list, possibly empty, of :class:`ProtocolSpec`.

        Called once per process, when :func:`load_protocols` builds the registry; the plugin
        module has been imported through its ``memlease.protocols`` entry point just before.
        The registry collects the lists of all plugins. Names must be unique across plugins:
        a later duplicate (plugins are taken in entry-point name order) is reported in
        ``ProtocolRegistry.problems`` and ignored. An exception raised here is reported the
        same way and the other plugins still load.
        """


@dataclass(frozen=True)
class ProtocolEntry:
    """A loaded protocol and the distribution that provides it."""

    spec: ProtocolSpec
    distribution: str


@dataclass
class ProtocolRegistry:
    """The protocols found, and the problems met finding them (one line each, by name)."""

    protocols: dict[str, ProtocolEntry] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)

    def get(self, name: str) -> ProtocolSpec:
        """The protocol called ``name``; KeyError with the known names if there is none."""
        try:
            return self.protocols[name].spec
        except KeyError:
            known = ", ".join(sorted(self.protocols)) or "none"
            raise KeyError(f"unknown protocol {name!r} (known: {known})") from None

    def names(self) -> list[str]:
        """The names of the loaded protocols, sorted."""
        return sorted(self.protocols)


def _distribution_name(ep: importlib.metadata.EntryPoint) -> str:
    dist = ep.dist
    return dist.name if dist is not None else "?"


def _codec_problem(spec: ProtocolSpec) -> str | None:
    """What is wrong with ``spec``'s codecs, found by making one of each: a codec that does
    not give what the interface requires would fail on its first connection instead."""
    for side, factory, base in (
        ("server", spec.server_codec, ServerCodec),
        ("client", spec.client_codec, ClientCodec),
    ):
        try:
            codec = factory(DEFAULT_MAX_MESSAGE)
        except Exception as exc:
            return f"{spec.name!r} cannot make a {side} codec: {type(exc).__name__}: {exc}"
        if not isinstance(codec, base):
            return (
                f"{spec.name!r}'s {side} codec {type(codec).__name__} is not a "
                f"memlease.protocol.{base.__name__} (subclass it; see docs/protocols.md)"
            )
    return None


def load_protocols(
    entry_points: Iterable[importlib.metadata.EntryPoint] | None = None,
    *,
    warn: bool = True,
) -> ProtocolRegistry:
    """Load every plugin of the ``memlease.protocols`` entry-point group.

    A plugin that fails to import, fails in its hook, returns something other than protocol
    specs, or registers a name already taken is recorded in ``problems`` (and warned about on
    stderr when ``warn``); the others load.
    """
    if entry_points is None:
        entry_points = importlib.metadata.entry_points(group=ENTRY_POINT_GROUP)
    manager = pluggy.PluginManager(PROJECT_NAME)
    manager.add_hookspecs(ProtocolHookSpecs)
    registry = ProtocolRegistry()
    distributions: dict[str, str] = {}
    for ep in sorted(entry_points, key=lambda e: e.name):
        dist = _distribution_name(ep)
        plugin_name = f"{ep.name} ({dist})"
        try:
            module = ep.load()
            if not manager.is_registered(module):
                manager.register(module, name=plugin_name)
                distributions[plugin_name] = dist
        except Exception as exc:
            registry.problems.append(
                f"protocol plugin {ep.name!r} from {dist} failed to load: "
                f"{type(exc).__name__}: {exc}"
            )
    # Each implementation is called on its own so that a failure is pinned on its plugin and
    # the others still load. get_hookimpls() lists them in registration order (pluggy's own
    # calls run it backwards), so the first plugin to claim a name keeps it.
    for impl in manager.hook.memlease_protocols.get_hookimpls():
        plugin_name = manager.get_name(impl.plugin) or "?"
        try:
            specs = list(cast(Iterable[object], impl.function()))
        except Exception as exc:
            registry.problems.append(
                f"protocol plugin {plugin_name} failed in memlease_protocols: "
                f"{type(exc).__name__}: {exc}"
            )
            continue
        for spec in specs:
            if not isinstance(spec, ProtocolSpec):
                registry.problems.append(
                    f"protocol plugin {plugin_name} returned {spec!r}, not a ProtocolSpec; ignored"
                )
                continue
            problem = _codec_problem(spec)
            if problem is not None:
                registry.problems.append(f"protocol plugin {plugin_name}: {problem}; ignored")
                continue
            if spec.name in registry.protocols:
                other = registry.protocols[spec.name].distribution
                registry.problems.append(
                    f"protocol plugin {plugin_name} registers {spec.name!r}, "
                    f"already provided by {other}; ignored"
                )
                continue
            registry.protocols[spec.name] = ProtocolEntry(spec, distributions.get(plugin_name, "?"))
    if warn:
        for problem in registry.problems:
            print(f"memlease: warning: {problem}", file=sys.stderr)
    return registry


@functools.cache
def default_registry() -> ProtocolRegistry:
    """The installed protocols, loaded once per process: entry-point discovery is slow."""
    return load_protocols()
