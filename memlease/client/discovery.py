"""Finding a fleet's servers in DNS (dnspython): the A and AAAA records of a name, such as a
headless Kubernetes Service's, with a given port; or, with no port, the name's SRV records,
each a target name and a port. A target stays a name (a StatefulSet pod's stable one, e.g.
memlease-0.memlease.default.svc.cluster.local), so the handles of its leases name the pod,
not an address a restarted pod gives up; it is resolved when the fleet connects.

Blocking: the trio fleet runs :meth:`DnsDiscovery.resolve` in a worker thread.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import dns.exception
import dns.resolver

from memlease.core.errors import ConnectionFailed

DEFAULT_RESOLVE_EVERY = 30.0
"""Seconds between two lookups of a fleet's DNS name."""

DNS_LIFETIME = 2.0
"""Seconds one lookup may take, all of the resolver's retries included."""

Address = tuple[str, int]


@dataclass
class DnsDiscovery:
    """Where the servers of ``name`` are: :meth:`resolve` asks DNS each time."""

    name: str
    port: int | None = None
    resolve_every: float = DEFAULT_RESOLVE_EVERY
    resolver: dns.resolver.Resolver = field(default_factory=dns.resolver.Resolver)

    def resolve(self) -> list[Address]:
        """The servers, sorted. Raises ConnectionFailed when DNS cannot say (no such name, no
        records of the kind asked, no answer in time)."""
        try:
            if self.port is not None:
                found = self._addresses(self.name, self.port)
            else:
                found = self._services()
        except dns.exception.DNSException as exc:
            raise ConnectionFailed(f"cannot find the servers of {self._what()}: {exc}") from None
        if not found:
            raise ConnectionFailed(f"cannot find the servers of {self._what()}: no records")
        return sorted(set(found))

    def _what(self) -> str:
        kind = f"A/AAAA records, port {self.port}" if self.port is not None else "SRV records"
        return f"{self.name!r} ({kind})"

    def _addresses(self, host: str, port: int) -> list[Address]:
        found: list[Address] = []
        for kind in ("A", "AAAA"):
            try:
                answer = self.resolver.resolve(host, kind, lifetime=DNS_LIFETIME)
            except (dns.resolver.NoAnswer, dns.resolver.NXDOMAIN):
                continue  # an IPv4-only (or IPv6-only) Service has none of the other kind
            found += [(record.to_text(), port) for record in answer]
        return found

    def _services(self) -> list[Address]:
        answer = self.resolver.resolve(self.name, "SRV", lifetime=DNS_LIFETIME)
        return [(record.target.to_text(omit_final_dot=True), int(record.port)) for record in answer]
