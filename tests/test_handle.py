"""Handles name their server: ``HOST:PORT/ID`` written by str() and read back by parse()."""

from __future__ import annotations

import ipaddress
import uuid

import pytest
from hypothesis import given
from hypothesis import strategies as st

from memlease import BadHandle, Handle
from memlease.core.messages import IdKind

hostnames = st.from_regex(r"\A[a-z][a-z0-9-]{0,20}(\.[a-z][a-z0-9-]{0,20}){0,3}\Z")
ipv4 = st.ip_addresses(v=4).map(str)
ipv6 = st.ip_addresses(v=6).map(str)
ports = st.integers(1, 65535)
ids = st.integers(1, 2**31 - 1) | st.uuids()


@given(st.one_of(hostnames, ipv4, ipv6), ports, ids)
def test_a_handle_reads_back_as_written(host: str, port: int, lease_id: int | uuid.UUID) -> None:
    handle = Handle((host, port), lease_id)
    assert Handle.parse(str(handle)) == handle


@given(ipv6, ports, st.uuids())
def test_an_ipv6_host_is_written_in_brackets(host: str, port: int, lease_id: uuid.UUID) -> None:
    text = str(Handle((host, port), lease_id))
    assert text == f"[{host}]:{port}/{lease_id}"
    assert ipaddress.ip_address(Handle.parse(text).server[0]) == ipaddress.ip_address(host)


def test_the_text_form() -> None:
    lease_id = uuid.UUID("1b4e28ba-2fa1-11d2-883f-0016d3cca427")
    assert str(Handle(("10.0.0.7", 7413), lease_id)) == f"10.0.0.7:7413/{lease_id}"
    assert Handle.parse("memlease-0.memlease:7411/185528596") == Handle(
        ("memlease-0.memlease", 7411), 185528596
    )


@pytest.mark.parametrize(
    "text",
    [
        "",
        "10.0.0.7:7413",  # no id
        "10.0.0.7/5",  # no port
        "10.0.0.7:0/5",
        "10.0.0.7:65536/5",
        "::1:7413/5",  # IPv6 without brackets
        "[::1/5",
        "[::1]7413/5",
        ":7413/5",
        "10.0.0.7:7413/0",
        "10.0.0.7:7413/2147483648",
        "10.0.0.7:7413/-1",
        "10.0.0.7:7413/not-an-id",
        "10.0.0.7:7413/",
        "10.0.0.7:x/5",
    ],
)
def test_text_that_is_no_handle_is_refused_with_what_a_handle_looks_like(text: str) -> None:
    with pytest.raises(BadHandle, match=r"HOST:PORT|neither a UUID"):
        Handle.parse(text)


@given(st.text(max_size=60))
def test_any_text_parses_or_raises_bad_handle(text: str) -> None:
    try:
        handle = Handle.parse(text)
    except BadHandle:
        return
    assert Handle.parse(str(handle)) == handle


def test_a_handle_of_the_other_id_kind_is_refused_by_name() -> None:
    from memlease.client.handle import routable

    with pytest.raises(BadHandle, match="protocol uuid ids are UUIDs"):
        routable("127.0.0.1:7413/5", IdKind.UUID, "uuid")
    with pytest.raises(BadHandle, match="protocol native ids are integers"):
        routable(f"127.0.0.1:7411/{uuid.uuid4()}", IdKind.INT, "native")
