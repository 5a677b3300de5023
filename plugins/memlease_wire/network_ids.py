"""How lease ids travel in the network-layout formats: the one thing network and uuid differ in."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from construct import Bytes, Int32ub

from memlease.core.errors import ProtocolError
from memlease.core.messages import IdKind, LeaseId

MAX_INT_ID = 0xFFFFFFFF


@dataclass(frozen=True)
class IdFormat:
    """How one id kind travels: its construct field, the wire value meaning "no id", and the
    conversions (``to_wire`` refuses an id the field cannot carry, with a ProtocolError)."""

    kind: IdKind
    field: Any
    absent: int | bytes
    to_wire: Callable[[str, LeaseId], int | bytes]
    from_wire: Callable[[Any], LeaseId]


def _int_to_wire(protocol: str, lease_id: LeaseId) -> int:
    if type(lease_id) is not int:
        raise ProtocolError(
            f"{protocol}: lease id {lease_id!r} is not an int; this protocol carries int ids "
            "only (UUID leases belong to the uuid protocol)"
        )
    if not 0 < lease_id <= MAX_INT_ID:
        raise ProtocolError(
            f"{protocol}: lease id {lease_id} is outside 1..{MAX_INT_ID}, so no lease has it"
        )
    return lease_id


def _uuid_to_wire(protocol: str, lease_id: LeaseId) -> bytes:
    if not isinstance(lease_id, uuid.UUID):
        raise ProtocolError(
            f"{protocol}: lease id {lease_id!r} is not a UUID; this protocol carries UUID ids "
            "only (int leases belong to the native and network protocols)"
        )
    return lease_id.bytes


_new_object = object.__new__
_set_slot = object.__setattr__
_SAFE_UNKNOWN = uuid.SafeUUID.unknown


def _uuid_from_wire(raw: bytes) -> uuid.UUID:
    # uuid.UUID(bytes=...) spends most of its microsecond validating arguments that a
    # 16-byte field cannot get wrong; filling its two slots directly is what it ends up doing.
    lease_id: uuid.UUID = _new_object(uuid.UUID)
    _set_slot(lease_id, "int", int.from_bytes(raw))
    _set_slot(lease_id, "is_safe", _SAFE_UNKNOWN)
    return lease_id


def _int_from_wire(raw: int) -> int:
    return raw


# The one difference between the network and uuid formats.
INT_IDS = IdFormat(IdKind.INT, Int32ub, 0, _int_to_wire, _int_from_wire)
UUID_IDS = IdFormat(IdKind.UUID, Bytes(16), bytes(16), _uuid_to_wire, _uuid_from_wire)
