"""torchrun's endpoint and ``--rdzv-conf`` as rdzv reads them (no torch needed)."""

from __future__ import annotations

import subprocess
import sys

import pytest

from rdzv.errors import ConfigurationError
from rdzv.torchrun.conf import VALID_KEYS, endpoint_url, parse_options


@pytest.mark.parametrize(
    ("endpoint", "url"),
    [
        ("127.0.0.1:29500", "tcp://127.0.0.1:29500"),
        (" node1:1234 ", "tcp://node1:1234"),
        ("node1", "tcp://node1:29400"),
        ("[::1]:5000", "tcp://[::1]:5000"),
        ("[::1]", "tcp://[::1]:29400"),
        ("::1", "tcp://[::1]:29400"),
        ("file:///shared/rdzv", "file:///shared/rdzv"),
        ("tcp://10.0.0.1:29400?token=s", "tcp://10.0.0.1:29400?token=s"),
        ("etcd://10.0.0.2:2379", "etcd://10.0.0.2:2379"),
        ("h1:29400,h2:29401", "tcp://h1:29400,h2:29401"),
        ("h1, [::1]:7", "tcp://h1:29400,[::1]:7"),
    ],
)
def test_endpoint_host_port_is_the_tcp_store_and_a_url_picks_its_backend(endpoint: str, url: str) -> None:
    assert endpoint_url(endpoint) == url


@pytest.mark.parametrize(
    "endpoint", ["", "  ", "node1:0", "node1:http", ":29400", "node1:70000", "[::1", "h1:1,"]
)
def test_a_bad_endpoint_is_a_configuration_error(endpoint: str) -> None:
    with pytest.raises(ConfigurationError, match="rdzv-endpoint"):
        endpoint_url(endpoint)


def test_an_unknown_conf_key_lists_every_valid_key() -> None:
    with pytest.raises(ConfigurationError) as caught:
        parse_options("h:1", "job", 1, 2, {"timeout": 900, "read_timeout": "60", "zz": "1"})
    message = str(caught.value)
    assert "unknown --rdzv-conf key(s) read_timeout, zz" in message
    assert all(key in message for key in VALID_KEYS)


def test_torchruns_timeout_is_the_join_timeout_unless_join_timeout_is_given() -> None:
    assert parse_options("h:1", "job", 1, 2, {"timeout": 900}).settings.join_timeout == 900
    both = parse_options("h:1", "job", 1, 2, {"timeout": 900, "join_timeout": "12"})
    assert both.settings.join_timeout == 12


def test_settings_come_from_the_conf_strings() -> None:
    conf = {
        "last_call_timeout": "1.5",
        "close_timeout": "3",
        "heartbeat_interval": "0.5",
        "heartbeat_misses": "4",
        "rank_policy": "sorted",
    }
    options = parse_options("h:1", "job", 2, 3, conf)
    s = options.settings
    assert (s.run_id, s.min_nodes, s.max_nodes) == ("job", 2, 3)
    assert (s.last_call_timeout, s.close_timeout, s.heartbeat_interval) == (1.5, 3.0, 0.5)
    assert (s.heartbeat_misses, s.rank_policy) == (4, "sorted")


@pytest.mark.parametrize(
    ("conf", "match"),
    [
        ({"heartbeat_misses": "many"}, "heartbeat_misses"),
        ({"last_call_timeout": "-1"}, "last_call_timeout"),
        ({"rank_policy": "random"}, "rank_policy"),
    ],
)
def test_a_bad_conf_value_names_its_key(conf: dict[str, str], match: str) -> None:
    with pytest.raises(ConfigurationError, match=match):
        parse_options("h:1", "job", 1, 2, conf)


def test_token_and_is_host_go_to_the_tcp_store() -> None:
    options = parse_options("h:1", "job", 1, 2, {"token": "s3cret", "is_host": "0"})
    assert options.url == "tcp://h:1"
    assert options.store_options == {"token": "s3cret", "is_host": "0"}


def test_token_and_is_host_are_refused_for_other_backends() -> None:
    with pytest.raises(ConfigurationError, match="only to a tcp store"):
        parse_options("file:///tmp/x", "job", 1, 2, {"is_host": "1"})


def test_the_entry_point_module_imports_no_torch() -> None:
    code = (
        "import sys, rdzv.torchrun.plugin as p\n"
        "assert callable(p.handler_creator())\n"
        "assert 'torch' not in sys.modules\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stderr
