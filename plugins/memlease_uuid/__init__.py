"""The ``uuid`` protocol: the network format with 16-byte UUID lease ids (version 4, drawn by
the server), a lease id space of its own. See docs/protocols.md."""

from memlease_wire.network_codec import NetworkFormat
from memlease_wire.network_ids import UUID_IDS

from memlease.protocol import ProtocolSpec, hookimpl

FORMAT = NetworkFormat("uuid", UUID_IDS)

UUID = ProtocolSpec(
    name="uuid",
    id_kind=UUID_IDS.kind,
    default_port=7413,
    description="the network format with 128-bit UUID lease ids",
    server_codec=FORMAT.server_codec,
    client_codec=FORMAT.client_codec,
)


@hookimpl
def memlease_protocols() -> list[ProtocolSpec]:
    """The uuid protocol."""
    return [UUID]
