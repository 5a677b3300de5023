"""The atheris harness shared by fuzz_<protocol>.py: both codecs of one protocol, fed
fuzzer-chosen bytes in fuzzer-chosen chunks. Run by hand (see docs/security.md); not a test
dependency.

What counts as a finding: any exception other than ProtocolError, a decoder holding more
bytes than it was fed, or an allocation beyond the limits libFuzzer is given
(-rss_limit_mb, -malloc_limit_mb), e.g. a buffer sized from a length field before the check.
"""

from __future__ import annotations

import sys
from collections.abc import Callable

import atheris

with atheris.instrument_imports():
    from memlease.core.errors import ProtocolError
    from memlease.protocol import ProtocolSpec, load_protocols

    # Loading the registry imports the plugin packages, so they are instrumented too.
    REGISTRY = load_protocols(warn=False)

MAX_MESSAGE = 1 << 20
"""Small, so that -malloc_limit_mb well above it catches any allocation a length field asks
for without the check."""


def one_input(spec: ProtocolSpec) -> Callable[[bytes], None]:
    def test_one_input(data: bytes) -> None:
        fdp = atheris.FuzzedDataProvider(data)
        server = spec.server_codec(MAX_MESSAGE)
        client = spec.client_codec(MAX_MESSAGE)
        fed = 0
        for codec, next_message in ((server, server.next_request), (client, client.next_reply)):
            try:
                while fdp.remaining_bytes():
                    chunk = fdp.ConsumeBytes(fdp.ConsumeIntInRange(1, 256))
                    fed += len(chunk)
                    codec.feed(chunk)
                    while next_message() is not None:
                        pass
                    buffered = getattr(codec, "buffered", None)
                    if buffered is not None and buffered() > fed:
                        raise AssertionError(f"holds {buffered()} bytes of {fed} fed")
                    if fdp.ConsumeBool():
                        break  # the rest goes to the other side's decoder
            except ProtocolError:
                pass

    return test_one_input


def main(protocol: str) -> None:
    spec = REGISTRY.get(protocol)
    atheris.Setup(sys.argv, one_input(spec))
    atheris.Fuzz()
