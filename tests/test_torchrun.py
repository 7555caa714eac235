"""torchrun end to end with ``--rdzv-backend=rdzv``: real torch, gloo, loopback, real processes.

Every torch import happens in a subprocess (torch warns on import without numpy,
and pytest turns warnings into errors). Each ``torchrun`` runs in its own
session; its workers die with it (``PR_SET_PDEATHSIG`` in the worker script), so
killing the session kills the node. Tests wait for lines the workers print,
never for time to pass.
"""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from rdzv.registry import torchrun_handlers
from rdzv.testing.net import free_port, wait_for_port
from torchrun_agents import (
    FAST_CONF,
    RUN_SECONDS,
    TRAIN,
    assert_world_of_four,
    launcher,
    results,
    torchrun_args,
)

pytestmark = [
    pytest.mark.torchrun,
    pytest.mark.skipif(importlib.util.find_spec("torch") is None, reason="torch is not installed"),
]


@pytest.fixture
def start(tmp_path: Path) -> Iterator[Any]:
    """``start(*torchrun_args) -> Agent``; every agent's session is killed at teardown."""
    with launcher(tmp_path) as launch:
        yield launch


def run_python(code: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=RUN_SECONDS, check=False
    )


def test_rdzv_is_listed_as_a_torchrun_handler_without_importing_torch() -> None:
    assert [h.target for h in torchrun_handlers() if h.name == "rdzv"] == [
        "rdzv.torchrun.plugin:handler_creator"
    ]


@pytest.mark.parametrize("first_import", ["", "import rdzv.torchrun.handler"])
def test_torch_registers_the_rdzv_handler_without_a_warning(first_import: str) -> None:
    """torch logs and swallows plugin errors, so the check is: registered and nothing logged."""
    code = f"""
import logging
records = []
class Keep(logging.Handler):
    def emit(self, record):
        records.append(record)
logging.basicConfig(level=logging.DEBUG, handlers=[Keep()])
{first_import}
from torch.distributed.elastic.rendezvous import rendezvous_handler_registry as registry
assert "rdzv" in registry._registry, sorted(registry._registry)
bad = [r.getMessage() for r in records if r.levelno >= logging.WARNING]
assert not bad, bad
print("ok")
"""
    result = run_python(code)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "ok"


def test_handler_over_a_single_node_hosts_the_round_store_and_maps_errors() -> None:
    """The handler's contract on ``memory://`` in one process (torch imported in a subprocess)."""
    code = """
from torch.distributed.elastic.rendezvous import api, rendezvous_handler_registry as registry
import rdzv
from rdzv.torchrun.handler import translated_errors
params = api.RendezvousParameters("rdzv", "memory://", "job1", 1, 1, local_addr="127.0.0.1", timeout=900)
handler = registry.create_handler(params)
assert handler.get_backend() == "rdzv" and handler.get_run_id() == "job1" and handler.use_agent_store
info = handler.next_rendezvous()
assert (info.rank, info.world_size) == (0, 1)
assert info.bootstrap_store_info.master_addr == "127.0.0.1"
info.store.set("key", "value")
assert info.store.get("key") == b"value"
assert handler.num_nodes_waiting() == 0 and not handler.is_closed()
second = handler.next_rendezvous()
assert second.bootstrap_store_info.master_port != info.bootstrap_store_info.master_port
handler.set_closed()
assert handler.is_closed()
try:
    handler.next_rendezvous()
except api.RendezvousClosedError as exc:
    assert isinstance(exc.__cause__, rdzv.RendezvousClosedError)
else:
    raise AssertionError("closed rendezvous joined")
assert handler.shutdown() is True and handler.shutdown() is False
cases = [
    (rdzv.RendezvousTimeoutError("t"), api.RendezvousTimeoutError),
    (rdzv.StoreTimeoutError("t"), api.RendezvousTimeoutError),
    (rdzv.StoreUnavailableError("u"), api.RendezvousConnectionError),
    (rdzv.AuthenticationError("a"), api.RendezvousConnectionError),
    (rdzv.StoreCorruptedError("c"), api.RendezvousStateError),
    (rdzv.RendezvousStateError("s"), api.RendezvousStateError),
]
for error, expected in cases:
    try:
        with translated_errors("job1"):
            raise error
    except api.RendezvousError as exc:
        assert type(exc) is expected and exc.__cause__ is error, (error, exc)
# A coordinator port taken since it was chosen: rank 0 hosts on another and publishes that one.
import socket
from rdzv.rendezvous.node import Rendezvous
from rdzv.store.memory import MemoryStore
from rdzv.torchrun.handler import RdzvRendezvousHandler
with socket.socket() as taken:
    taken.bind(("127.0.0.1", 0))
    taken.listen()
    port = taken.getsockname()[1]
    store = MemoryStore()
    node = Rendezvous(store, "job2", 1, 1, addr=f"127.0.0.1:{port}", last_call_timeout=1)
    handler = RdzvRendezvousHandler(node, store)
    info = handler.next_rendezvous()
    assert info.bootstrap_store_info.master_port not in (0, port), (port, info.bootstrap_store_info)
    info.store.set("key", "value")
    assert handler.shutdown() is True
print("ok")
"""
    result = run_python(code)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "ok"


@pytest.mark.parametrize("store", ["host:port", "file"])
def test_two_nodes_run_gloo_all_reduce_through_rdzv(start: Any, store: str, tmp_path: Path) -> None:
    """``HOST:PORT`` is the embedded TCP store (with a token here); a URL picks its backend."""
    if store == "file":
        (tmp_path / "store").mkdir()
        args = torchrun_args(f"file://{tmp_path}/store", "two-nodes", "2")
    else:
        args = torchrun_args(free_port(), "two-nodes", "2", conf=FAST_CONF + ",token=s3cret")
    agents = [start(*args, str(TRAIN), "sum") for _ in range(2)]
    codes = [agent.finish() for agent in agents]
    output = "\n".join(a.output for a in agents)
    assert codes == [0, 0], output
    assert_world_of_four(results(*agents), output)


def test_survivors_re_form_after_a_node_is_killed_mid_training(start: Any) -> None:
    port = free_port()
    # A longer last call, so that both survivors make the same round after the kill.
    conf = "last_call_timeout=2,heartbeat_interval=0.5,heartbeat_misses=4"
    args = torchrun_args(port, "elastic", "1:3", "--max-restarts=3", conf=conf)
    host = start(*args, str(TRAIN), "elastic:4")
    wait_for_port("127.0.0.1", port, RUN_SECONDS)  # the first node hosts the rdzv store; keep it alive
    others = [start(*args, str(TRAIN), "elastic:4") for _ in range(2)]
    host.wait_for_line(r'^STEP .*"world": 6')
    others[1].kill()
    survivors = [host, others[0]]
    codes = [agent.finish() for agent in survivors]
    output = "\n".join(a.output for a in survivors)
    assert codes == [0, 0], output
    assert_world_of_four(results(*survivors), output)


def test_a_failed_worker_is_restarted_and_the_job_completes(start: Any) -> None:
    port = free_port()
    args = torchrun_args(port, "restart", "2", "--max-restarts=1")
    agents = [start(*args, str(TRAIN), "fail-once") for _ in range(2)]
    codes = [agent.finish() for agent in agents]
    output = "\n".join(a.output for a in agents)
    assert codes == [0, 0], output
    assert sum(len(a.records("FAILING")) for a in agents) == 1, output
    assert_world_of_four(results(*agents), output)


def test_an_unknown_rdzv_conf_key_fails_with_the_valid_keys(start: Any) -> None:
    args = torchrun_args(free_port(), "bad-conf", "1", conf="heartbeat_interval=1,no_such_key=3")
    agent = start(*args, str(TRAIN), "sum")
    assert agent.finish() != 0
    assert "rdzv: unknown --rdzv-conf key(s) no_such_key; valid keys: join_timeout," in agent.output
