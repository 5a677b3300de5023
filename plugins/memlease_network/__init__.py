"""The ``network`` protocol: every operation, big-endian fixed widths, int lease ids, and
explicit error replies; portable between hosts of any byte order. See docs/protocols.md."""

from memlease_wire.network_codec import NetworkFormat
from memlease_wire.network_ids import INT_IDS

from memlease.protocol import ProtocolSpec, hookimpl

FORMAT = NetworkFormat("network", INT_IDS)

NETWORK = ProtocolSpec(
    name="network",
    id_kind=INT_IDS.kind,
    default_port=7412,
    description="every operation, network byte order, int ids, explicit error replies",
    server_codec=FORMAT.server_codec,
    client_codec=FORMAT.client_codec,
)


@hookimpl
def memlease_protocols() -> list[ProtocolSpec]:
    """The network protocol."""
    return [NETWORK]
