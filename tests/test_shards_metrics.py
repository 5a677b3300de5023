"""``memlease serve --shards N --metrics HOST:PORT``: shard i serves its own metrics on the
metrics port + i (port 0: a free port each), the supervisor prints them all, a restarted
shard serves them on the port it had (and a reload does not take that for a change), and
ports that would clash or pass 65535 are refused."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from memlease import Client, ConfigError
from memlease.server.config import load_config
from memlease.server.sharding import BoundPorts, shard_configs
from tests.test_shards import _alive, _wait_for


def _figures(address: str) -> dict[str, float]:
    """One scrape of a shard's /metrics: each unlabelled sample's value by name."""
    with urllib.request.urlopen(f"http://{address}/metrics", timeout=5) as reply:
        body = reply.read().decode()
    return {
        sample.name: sample.value
        for family in text_string_to_metric_families(body)
        for sample in family.samples
        if not sample.labels
    }


def test_shard_i_serves_its_metrics_on_the_metrics_port_plus_i() -> None:
    config = load_config(
        None, {"shards": "3", "listeners": ["uuid=7413"], "metrics_listen": "9100"}
    )
    assert [s.metrics_listen for s in shard_configs(config)] == [
        "127.0.0.1:9100",
        "127.0.0.1:9101",
        "127.0.0.1:9102",
    ]
    v6 = load_config(None, {"shards": "2", "listeners": ["uuid=0"], "metrics_listen": "[::1]:0"})
    assert [s.metrics_listen for s in shard_configs(v6)] == ["[::1]:0", "[::1]:0"]
    restarted = shard_configs(v6, {1: BoundPorts(listeners=(), metrics=40001)})
    assert [s.metrics_listen for s in restarted] == ["[::1]:0", "[::1]:40001"]
    off = load_config(None, {"shards": "2", "listeners": ["uuid=7413"]})
    assert [s.metrics_listen for s in shard_configs(off)] == [None, None]  # off by default


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (
            {"listeners": ["uuid=7413"], "metrics_listen": "7414"},
            "--metrics = '7414': shard 0's metrics would take port 7414, uuid shard 1's: "
            "shard i takes --metrics's port + i as it takes each listener's port + i, so "
            "space them at least 2 apart",
        ),
        (
            {"listeners": ["native=7411", "uuid=7413"], "metrics_listen": "127.0.0.1:7410"},
            "--metrics = '127.0.0.1:7410': shard 1's metrics would take port 7411, native "
            "shard 0's",
        ),
        (
            {"listeners": ["uuid=0"], "metrics_listen": "65535"},
            "--metrics = '65535': shard 1's metrics would need port 65536, past 65535: give a "
            "port at most 65534, or 0 (any free port)",
        ),
    ],
)
def test_metrics_ports_that_meet_a_listener_s_or_pass_65535_are_refused(
    overrides: dict[str, object], message: str
) -> None:
    with pytest.raises(ConfigError, match=re.escape(message)):
        load_config(None, {"shards": "2", **overrides})


def test_the_file_key_is_named_when_it_clashes(tmp_path: Path) -> None:
    path = tmp_path / "server.toml"
    path.write_text(
        'shards = 2\n[[listener]]\nprotocol = "uuid"\nport = 7413\n'
        '[metrics]\nlisten = "127.0.0.1:7412"\n'
    )
    message = "metrics.listen = '127.0.0.1:7412': shard 1's metrics would take port 7413"
    with pytest.raises(ConfigError, match=re.escape(message)):
        load_config(path)


def test_each_shard_serves_its_own_metrics_and_keeps_its_port_when_restarted(
    tmp_path: Path,
) -> None:
    stderr, stdout = tmp_path / "stderr", tmp_path / "stdout"
    command = [sys.executable, "-m", "memlease.cli.main", "serve", "--shards", "2",
               "--listen", "uuid=0", "--metrics", "0", "--arena", "2MiB"]  # fmt: skip
    with stderr.open("wb") as err, stdout.open("wb") as out:
        supervisor = subprocess.Popen(command, stdout=out, stderr=err)
    pids: list[int] = []
    try:
        printed = _wait_for(stdout, r"uuid=(\S+)\nmetrics=(\S+)\n")
        servers, metrics = (printed.group(i).split(",") for i in (1, 2))
        assert len(metrics) == 2 and len(set(metrics)) == 2
        for index in (0, 1):  # the supervisor's log names each shard's metrics address too
            said = f"listening on uuid {servers[index]}, metrics {metrics[index]},"
            found = _wait_for(stderr, rf"shard {index} \(pid (\d+)\) {re.escape(said)}")
            pids.append(int(found.group(1)))

        with Client(servers[0], "uuid") as client:
            client.lease(1024, 60_000)
        first, second = _figures(metrics[0]), _figures(metrics[1])
        assert (first["memlease_leases"], second["memlease_leases"]) == (1, 0)
        granted = "memlease_leases_granted_total"
        assert (first[granted], second[granted]) == (1, 0)
        assert first["memlease_arena_size_bytes"] == second["memlease_arena_size_bytes"] == 1 << 20

        os.kill(pids[1], signal.SIGKILL)
        said = re.escape(f"listening on uuid {servers[1]}, metrics {metrics[1]},")
        restarted = _wait_for(stderr, rf"shard 1 \(pid (?!{pids[1]}\))(\d+)\) {said}")
        pids.append(int(restarted.group(1)))
        assert _figures(metrics[1])[granted] == 0  # a new server, on the same ports
        assert _figures(metrics[0])["memlease_leases"] == 1

        # Reloading the same configuration changes nothing, on the restarted shard too:
        # the ports it took again are the ones its port 0s stand for.
        supervisor.send_signal(signal.SIGHUP)
        deadline = time.monotonic() + 10
        while stderr.read_text().count("SIGHUP: reloaded") < 2 and time.monotonic() < deadline:
            time.sleep(0.05)
        log = stderr.read_text()
        assert log.count("SIGHUP: reloaded: no change to apply") == 2, log
        assert "takes a restart" not in log

        supervisor.send_signal(signal.SIGINT)
        assert supervisor.wait(20) == 0
        assert not any(_alive(pid) for pid in pids)
    finally:
        if supervisor.poll() is None:
            supervisor.kill()
        for pid in pids:
            if _alive(pid):
                os.kill(pid, signal.SIGKILL)
