"""Placeholder: the demo protocol arrives with the protocol issue."""

from memlease.protocol import ProtocolSpec, hookimpl


@hookimpl
def memlease_protocols() -> list[ProtocolSpec]:
    return []
