"""torchrun's way of calling a rendezvous handler, with ``rdzv`` where c10d was (issue 14).

torch spells ``is_host`` as a bool, passes c10d's ``--rdzv-conf`` keys, uses
``HOST:0`` for a single node, reads ``TORCH_DISABLE_SHARE_RDZV_TCP_STORE``, shuts
handlers down one after another in one process, and calls
``num_nodes_waiting()`` from the agent's monitor loop. Each is staged here with
torch's own ``RendezvousParameters`` and registry, or a real ``torchrun``.
"""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from rdzv.testing.net import free_port, wait_for_port
from rdzv.testing.servers import serve_process
from torchrun_agents import FAST_CONF, HANDLER_NODE, RUN_SECONDS, TRAIN, Agent, launcher, torchrun_args

pytestmark = [
    pytest.mark.torchrun,
    pytest.mark.skipif(importlib.util.find_spec("torch") is None, reason="torch is not installed"),
]

# Short leases (2 s) so that a killed node is gone in seconds; a long close_timeout,
# so that a shutdown which waited for it would show.
NODE_CONF = {"last_call_timeout": 0.5, "heartbeat_interval": 0.5, "heartbeat_misses": 4, "close_timeout": 30}


@pytest.fixture
def start(tmp_path: Path) -> Iterator[Any]:
    with launcher(tmp_path) as launch:
        yield launch


def node(start: Any, endpoint: str, run_id: str, **conf: object) -> Agent:
    """A ``handler_node.py`` process: one handler built by torch's registry, driven over stdin."""
    return start.python(HANDLER_NODE, endpoint, run_id, "2", json.dumps({**NODE_CONF, **conf}))


def record(agent: Agent, kind: str, nth: int = 1) -> dict[str, Any]:
    """The ``nth`` ``KIND {json}`` line of ``agent`` (waiting for it)."""
    line = agent.wait_for_line(f"^{kind} ", nth=nth)
    found: dict[str, Any] = json.loads(line.split(" ", 1)[1])
    return found


def exit_within(agent: Agent, seconds: float) -> float:
    """How long ``agent`` took to exit (fails past ``seconds``)."""
    began = time.monotonic()
    try:
        agent.proc.wait(seconds)
    except subprocess.TimeoutExpired:
        pytest.fail(f"still running after {seconds} s; output:\n{agent.output}")
    return time.monotonic() - began


def test_torch_parameters_build_handlers_that_shut_down_one_after_another_without_waiting(
    tmp_path: Path,
) -> None:
    """As torch's agent tests do: ``is_host`` bools and strings, handlers in one process, then
    shut down in turn. The host's shutdown returns at once; the other still reaches its store."""
    port = free_port()
    (tmp_path / "s").mkdir()
    code = f"""
import os, threading, time
from torch.distributed.elastic.rendezvous import api, rendezvous_handler_registry as registry
conf = dict(last_call_timeout=1, close_timeout=30, timeout=60)
def make(endpoint, **extra):
    params = api.RendezvousParameters("rdzv", endpoint, "seq", 2, 2, local_addr="127.0.0.1", **conf, **extra)
    return registry.create_handler(params)
host = make("127.0.0.1:{port}", is_host=True)
other = make("127.0.0.1:{port}", is_host="false")
for spelling in (True, "t", "yes", "Y", "1", "0", "n", "auto"):
    registry.create_handler(api.RendezvousParameters(
        "rdzv", "file://{tmp_path}/s", "f", 1, 1, is_host=spelling)).shutdown()
infos = {{}}
join = lambda h: infos.update({{id(h): h.next_rendezvous()}})
threads = [threading.Thread(target=join, args=(h,)) for h in (host, other)]
for t in threads: t.start()
for t in threads: t.join(60)
assert sorted(i.rank for i in infos.values()) == [0, 1], infos
assert host.use_agent_store
os.environ["TORCH_DISABLE_SHARE_RDZV_TCP_STORE"] = "1"
assert not host.use_agent_store
for handler in (host, other):
    began = time.monotonic()
    assert handler.shutdown() is True
    print("SHUTDOWN", round(time.monotonic() - began, 3))
began = time.monotonic()  # the interpreter waits for non-daemon threads (a host's) at exit
for thread in threading.enumerate():
    if thread is not threading.main_thread() and not thread.daemon:
        thread.join()
print("EXIT", round(time.monotonic() - began, 3))
"""
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=RUN_SECONDS, check=False
    )
    assert result.returncode == 0, result.stderr
    seconds = [float(line.split()[1]) for line in result.stdout.splitlines() if line.startswith("SHUTDOWN")]
    assert len(seconds) == 2, result.stdout
    assert max(seconds) < 5, result.stdout  # close_timeout is 30
    exits = [float(line.split()[1]) for line in result.stdout.splitlines() if line.startswith("EXIT")]
    assert exits[0] < 5, result.stdout  # nor does the process at exit


def test_a_host_shuts_down_at_once_and_stops_hosting_when_a_killed_member_is_gone(start: Any) -> None:
    port = free_port()
    host = node(start, f"127.0.0.1:{port}", "dead-member", is_host=True)
    wait_for_port("127.0.0.1", port, RUN_SECONDS)
    member = node(start, f"127.0.0.1:{port}", "dead-member", is_host=False)
    assert {record(host, "JOINED")["world"], record(member, "JOINED")["world"]} == {2}
    member.kill()
    host.send("shutdown")
    shutdown = record(host, "SHUTDOWN")
    assert shutdown["result"] is True
    assert shutdown["seconds"] < 5, host.output  # close_timeout is 30
    # It hosts until the killed member's lease (2 s) has run out, not for close_timeout.
    exit_within(host, 20)
    assert "stopped hosting after close_timeout" not in host.output


def test_a_host_outlives_a_live_member_until_it_has_shut_down(start: Any) -> None:
    port = free_port()
    host = node(start, f"127.0.0.1:{port}", "live-member", is_host="yes")
    wait_for_port("127.0.0.1", port, RUN_SECONDS)
    member = node(start, f"127.0.0.1:{port}", "live-member", is_host="n")
    record(host, "JOINED")
    record(member, "JOINED")
    host.send("shutdown")
    assert record(host, "SHUTDOWN")["seconds"] < 5, host.output
    # The member's lease (2 s) outlasts this check: the host still serves a live member.
    assert host.proc.poll() is None, host.output
    member.send("shutdown")
    assert record(member, "SHUTDOWN")["result"] is True, member.output  # it reached the store
    exit_within(host, 15)
    assert host.proc.returncode == 0, host.output


def test_num_nodes_waiting_fails_within_read_timeout_when_the_store_server_is_killed(start: Any) -> None:
    with serve_process() as server:
        nodes = [node(start, server.url, "dead-store", read_timeout=2) for _ in range(2)]
        for each in nodes:
            record(each, "JOINED")
        nodes[0].send("waiting")
        assert record(nodes[0], "WAITING")["result"] == 0
        server.kill()
        server.process.wait()
        for each in nodes:
            each.send("waiting")
        waits = [record(each, "WAITING", nth=2 if each is nodes[0] else 1) for each in nodes]
    assert {w.get("error") for w in waits} == {"RendezvousConnectionError"}, waits
    # read_timeout (2 s), plus a loaded machine: not the default 10 s, nor the 30 s it took before.
    assert max(w["seconds"] for w in waits) < 8, waits
    for each in nodes:
        each.send("shutdown")
    shutdowns = [record(each, "SHUTDOWN") for each in nodes]
    assert {s["result"] for s in shutdowns} == {False}, shutdowns  # could not close: nothing to reach
    assert max(s["seconds"] for s in shutdowns) < 2 * 8, shutdowns


def test_agents_give_up_within_seconds_when_the_rdzv_serve_they_use_is_killed(
    start: Any, tmp_path: Path
) -> None:
    """The monitor loop's ``num_nodes_waiting()`` fails within ``read_timeout``; the agents stop."""
    with serve_process() as server:
        args = torchrun_args(server.url, "store-lost", "2", conf=FAST_CONF + ",read_timeout=2")
        agents = [start(*args, str(TRAIN), "hold") for _ in range(2)]
        agents[0].wait_for_line(r'^STEP .*"world": 4')
        server.kill()
        server.process.wait()
        began = time.monotonic()
        codes = [agent.finish() for agent in agents]
        elapsed = time.monotonic() - began
    output = "\n".join(a.output for a in agents)
    assert all(code != 0 for code in codes), output
    assert "RendezvousConnectionError" in output
    assert elapsed < 45, output  # read_timeout 2 s a call: seconds, where 30 s a call took minutes
