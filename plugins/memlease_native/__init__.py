"""The native protocol (placeholder until the protocol issue lands)."""

from memlease.protocol import ProtocolSpec, hookimpl


@hookimpl
def memlease_protocols() -> list[ProtocolSpec]:
    return []
