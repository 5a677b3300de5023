"""Numbers outside a protocol's fields are usage errors (exit 2, one line giving the range),
found before anything is sent: through ``memlease.cli.main`` with the installed protocols."""

from __future__ import annotations

import pytest

from memlease.cli.main import main

Capture = pytest.CaptureFixture[str]

# Nothing listens on port 1: a command that got as far as connecting would exit 1.
NOWHERE = "127.0.0.1:1"
ID = {"native": "5", "network": "5", "uuid": "1b4e28ba-2fa1-11d2-883f-0016d3cca427"}


def usage_error(capsys: Capture, protocol: str, *argv: str) -> str:
    status = main(["--server", NOWHERE, "--protocol", protocol, *argv])
    out, err = capsys.readouterr()
    assert (status, out) == (2, ""), err
    assert err.count("\n") == 1, err
    return err


@pytest.mark.parametrize(
    ("protocol", "argv", "says"),
    [
        ("native", ["lease", "10GiB"], "lease size 10737418240 B is outside"),
        ("native", ["lease", "1KiB", "--ttl", "100000h"], "(0 to 2147483647 ms)"),
        ("network", ["lease", "1KiB", "--ttl", "100000h"], "(0 to 4294967295 ms)"),
        ("uuid", ["lease", "1KiB", "--ttl", "100000h"], "(0 to 4294967295 ms)"),
        ("network", ["read", "{id}", "0", "99999999999"], "read length 99999999999 B"),
        ("uuid", ["read", "{id}", "0", "99999999999"], "(0 to 4294967295 B)"),
        ("native", ["renew", "{id}", "--ttl", "100000h"], "renew ttl 360000000000 ms"),
        ("network", ["renew", "{id}", "--ttl", "100000h"], "(0 to 4294967295 ms)"),
    ],
)
def test_a_number_outside_the_protocol_s_field_gives_its_range_and_exit_2(
    capsys: Capture, protocol: str, argv: list[str], says: str
) -> None:
    err = usage_error(capsys, protocol, *(a.format(id=ID[protocol]) for a in argv))
    assert says in err
    assert "struct" not in err and "format requires" not in err


@pytest.mark.parametrize("protocol", ["native", "network", "uuid"])
def test_a_max_message_below_the_header_is_a_usage_error(capsys: Capture, protocol: str) -> None:
    err = usage_error(capsys, protocol, "--max-message", "4", "stats")
    assert "--max-message 4" in err and "header size" in err
