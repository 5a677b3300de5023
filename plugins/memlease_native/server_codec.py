"""The server's end of one native connection: the frame decoder and the encoders of ``codec``
behind the codec interface.

An ordinary class in a module of its own, never compiled: the interface it subclasses is not,
and the compiled frame decoder allows subclasses that are not (a compiled class could only
hold the decoder, and pass each call on to it: a frame more per call, interpreted). The work
of each message, decoding and encoding, is ``codec``'s, compiled in the mypyc build.
"""

from __future__ import annotations

from collections.abc import Sequence

from memlease_wire.framing import FrameDecoder

from memlease.core.messages import Data, Reply, Request
from memlease.protocol import Bytes, ServerCodec
from memlease_native.codec import (
    EARLY_KEY,
    PROTOCOL,
    REQUEST_RULES,
    S_HEADER,
    describe_type,
    encode_data_parts,
    encode_reply,
)


class NativeServerCodec(FrameDecoder[Request], ServerCodec):
    """The server's end of one native connection."""

    __slots__ = ()

    def __init__(self, max_message: int) -> None:
        super().__init__(
            protocol=PROTOCOL,
            header=S_HEADER,
            rules=REQUEST_RULES,
            max_message=max_message,
            unknown=describe_type,
            early_key=EARLY_KEY,
        )

    # The frame decoder's own methods and the module's function, not wrappers: next_requests
    # is the hottest call of a server, encode_reply a call per reply.
    next_request = FrameDecoder.next_message
    next_requests = FrameDecoder.next_messages
    encode_reply = staticmethod(encode_reply)

    def encode_reply_parts(self, reply: Reply) -> Sequence[Bytes]:
        if type(reply) is Data:
            return encode_data_parts(reply)
        return (encode_reply(reply),)
