"""The ``native`` protocol: the original C++ MemoryLease wire format, byte for byte.

Host byte order, C int and long widths, int32 lease ids; see docs/protocols.md.
"""

from memlease.core.messages import IdKind
from memlease.protocol import ProtocolSpec, hookimpl
from memlease_native.client_codec import NativeClientCodec
from memlease_native.server_codec import NativeServerCodec

NATIVE = ProtocolSpec(
    name="native",
    id_kind=IdKind.INT,
    default_port=7411,
    description="the original MemoryLease format, byte for byte (host byte order, int32 ids)",
    server_codec=NativeServerCodec,
    client_codec=NativeClientCodec,
)


@hookimpl
def memlease_protocols() -> list[ProtocolSpec]:
    """The native protocol."""
    return [NATIVE]
