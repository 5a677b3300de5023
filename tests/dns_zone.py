"""A DNS server (dnslib's) on loopback for the test, answering from records the test sets and
changes as it goes; ``zone`` yields it with a dnspython resolver that asks it."""

from __future__ import annotations

from collections.abc import Iterator

import dns.resolver
import pytest
from dnslib import QTYPE, RR, DNSRecord
from dnslib.server import BaseResolver, DNSLogger, DNSServer


class Zone(BaseResolver):  # type: ignore[misc]
    """Answers from ``records`` (name, type) -> [rdata]; the test changes it as it goes."""

    def __init__(self) -> None:
        self.records: dict[tuple[str, str], list[object]] = {}

    def resolve(self, request: DNSRecord, handler: object) -> DNSRecord:
        reply = request.reply()
        name = str(request.q.qname).rstrip(".")
        kind = QTYPE[request.q.qtype]
        for rdata in self.records.get((name, kind), []):
            reply.add_answer(RR(request.q.qname, request.q.qtype, rdata=rdata, ttl=1))
        return reply


@pytest.fixture(name="zone")
def zone_fixture() -> Iterator[tuple[Zone, dns.resolver.Resolver]]:
    records = Zone()
    server = DNSServer(records, address="127.0.0.1", port=0, logger=DNSLogger("-request,-reply"))
    server.start_thread()
    resolver = dns.resolver.Resolver(configure=False)
    resolver.nameservers = ["127.0.0.1"]
    resolver.port = server.server.server_address[1]
    try:
        yield records, resolver
    finally:
        server.stop()
        server.server.server_close()


