"""Lists of lease ids in the network-layout formats: a count, then the ids end to end.

construct declares them (``PrefixedArray`` in network_layout); these pack and unpack a whole
run of ids in one struct call (int ids) or one join (uuid ids), and the tests check both
against the declarations.
"""

from __future__ import annotations

import struct
from collections.abc import Sequence
from uuid import UUID

from memlease.core.errors import ProtocolError
from memlease.core.messages import LeaseId
from memlease_wire.network_ids import IdFormat

COUNT = struct.Struct(">L")


class IdLists:
    """Packs and unpacks runs of one id kind."""

    def __init__(self, protocol: str, ids: IdFormat, id_size: int) -> None:
        self.protocol = protocol
        self.ids = ids
        self.id_size = id_size
        self._uuid = id_size == 16

    def pack(self, lease_ids: Sequence[LeaseId]) -> bytes:
        """The ids end to end (without their count); ProtocolError for one the format cannot
        carry."""
        if self._uuid:
            if all(type(i) is UUID for i in lease_ids):
                return b"".join([i.bytes for i in lease_ids])  # type: ignore[union-attr]
            to_wire = self.ids.to_wire
            return b"".join([to_wire(self.protocol, i) for i in lease_ids])  # type: ignore[misc]
        try:
            return struct.pack(f">{len(lease_ids)}L", *lease_ids)
        except struct.error:
            for lease_id in lease_ids:
                self.ids.to_wire(self.protocol, lease_id)  # raises the error that explains
            raise

    def unpack(self, buf: bytearray, at: int, count: int, room: int, what: str) -> list[LeaseId]:
        """``count`` ids from ``at``, where the frame leaves ``room`` bytes for them."""
        size = self.id_size
        if count * size != room:
            raise ProtocolError(
                f"{what} claims {count} ids ({count * size} bytes) but its frame carries "
                f"{room} bytes for them"
            )
        if not self._uuid:
            return list(struct.unpack_from(f">{count}L", buf, at))
        from_wire = self.ids.from_wire
        raw = bytes(buf[at : at + room])
        return [from_wire(raw[k : k + 16]) for k in range(0, room, 16)]
