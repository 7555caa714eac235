"""torchrun's endpoint and ``--rdzv-conf`` as rdzv reads them (no torch needed)."""

from __future__ import annotations

import logging
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


@pytest.mark.parametrize("endpoint", ["", "  ", "node1:http", ":29400", "node1:70000", "[::1", "h1:1,"])
def test_a_bad_endpoint_is_a_configuration_error(endpoint: str) -> None:
    with pytest.raises(ConfigurationError, match="rdzv-endpoint"):
        endpoint_url(endpoint)


def test_an_unknown_conf_key_lists_every_valid_key() -> None:
    with pytest.raises(ConfigurationError) as caught:
        parse_options("h:1", "job", 1, 2, {"timeout": 900, "read_timeout": "60", "zz": "1", "hearbeat": "1"})
    message = str(caught.value)
    assert "unknown --rdzv-conf key(s) hearbeat, zz;" in message
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
    assert options.store_options == {"token": "s3cret", "is_host": "0", "timeout": "10.0"}


def test_a_token_is_refused_for_other_backends() -> None:
    with pytest.raises(ConfigurationError, match="only to a tcp store"):
        parse_options("file:///tmp/x", "job", 1, 2, {"token": "s"})


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (True, "1"), (False, "0"), ("auto", "auto"), ("AUTO", "auto"),
        *[(text, "1") for text in ("1", "true", "True", "t", "yes", "Y")],
        *[(text, "0") for text in ("0", "false", "FALSE", "f", "no", "n")],
    ],
)  # fmt: skip
def test_is_host_is_read_as_torch_spells_booleans(value: object, expected: str) -> None:
    assert parse_options("h:1", "job", 1, 2, {"is_host": value}).store_options["is_host"] == expected


def test_is_host_that_is_not_a_boolean_names_the_accepted_spellings() -> None:
    with pytest.raises(
        ConfigurationError, match=r"is_host='maybe' is not a boolean; use auto, or one of 1/true"
    ):
        parse_options("h:1", "job", 1, 2, {"is_host": "maybe"})


def test_is_host_with_a_store_that_is_not_hosted_has_no_effect_and_says_so(
    caplog: pytest.LogCaptureFixture,
) -> None:
    with caplog.at_level(logging.INFO, logger="rdzv.torchrun.conf"):
        options = parse_options("file:///tmp/x", "job", 1, 2, {"is_host": True})
    assert "is_host" not in options.store_options
    notes = [r.getMessage() for r in caplog.records if "is_host" in r.getMessage()]
    assert notes == [
        "rdzv: --rdzv-conf is_host has no effect with file:///tmp/x (only a tcp store is hosted)"
    ]


def test_torch_keep_alive_keys_set_the_heartbeat_and_read_timeout_the_store_operations() -> None:
    conf = {"keep_alive_interval": "2", "keep_alive_max_attempt": "7", "read_timeout": "4"}
    options = parse_options("h:1", "job", 1, 2, conf)
    assert (options.settings.heartbeat_interval, options.settings.heartbeat_misses) == (2.0, 7)
    assert options.read_timeout == 4.0
    assert options.store_options["timeout"] == "4.0"


def test_read_timeout_bounds_operations_of_every_built_in_store_but_not_a_url_timeout() -> None:
    assert parse_options("file:///d", "job", 1, 2, {}).store_options == {"timeout": "10.0"}
    assert parse_options("etcd://h:2379", "job", 1, 2, {"read_timeout": 3}).store_options == {
        "timeout": "3.0"
    }
    assert parse_options("tcp://h:1?timeout=7", "job", 1, 2, {"read_timeout": 3}).store_options == {}
    assert parse_options("memory://", "job", 1, 2, {}).store_options == {}


@pytest.mark.parametrize("value", ["0", "-1", "soon"])
def test_a_bad_read_timeout_is_refused(value: str) -> None:
    with pytest.raises(ConfigurationError, match="read_timeout must be a positive number"):
        parse_options("h:1", "job", 1, 2, {"read_timeout": value})


def test_a_torch_key_and_its_rdzv_key_together_are_refused() -> None:
    with pytest.raises(ConfigurationError, match="both keep_alive_interval and heartbeat_interval"):
        parse_options("h:1", "job", 1, 2, {"keep_alive_interval": "2", "heartbeat_interval": "3"})


def test_torch_keys_without_meaning_here_are_accepted_with_one_log_line(
    caplog: pytest.LogCaptureFixture,
) -> None:
    conf = {"heartbeat_timeout": "30", "store_type": "tcp", "use_libuv": "1", "join_timeout": "9"}
    with caplog.at_level(logging.INFO, logger="rdzv.torchrun.conf"):
        options = parse_options("h:1", "job", 1, 2, conf)
    assert options.settings.join_timeout == 9
    notes = [r.getMessage() for r in caplog.records]
    assert notes == [
        "rdzv: --rdzv-conf heartbeat_timeout, store_type, use_libuv: no effect with --rdzv-backend=rdzv"
    ]


@pytest.mark.parametrize(
    "conf",
    [
        {"'join_timeout": "5", "last_call_timeout": "1", "timeout": "7'"},  # torch's test_run.py
        {"'join_timeout": "5", "last_call_timeout": "1'", "timeout": 900},  # torchrun adds timeout
        {'"join_timeout': "5", "last_call_timeout": "1", "timeout": '7"'},
        {"join_timeout": "'5'", "last_call_timeout": '"1"', "timeout": "7"},
    ],
)
def test_one_level_of_matching_quotes_is_stripped(conf: dict[str, str]) -> None:
    s = parse_options("h:1", "job", 1, 2, conf).settings
    assert (s.join_timeout, s.last_call_timeout) == (5.0, 1.0)


def test_unmatched_quotes_stay_and_fail_as_an_unknown_key() -> None:
    with pytest.raises(ConfigurationError, match="unknown --rdzv-conf key\\(s\\) 'join_timeout;"):
        parse_options("h:1", "job", 1, 2, {"'join_timeout": "5", "timeout": "7"})


def test_port_zero_hosts_on_a_free_port_for_a_single_node() -> None:
    options = parse_options("localhost:0", "job", 1, 1, {})
    assert options.url == "tcp://localhost:0"
    assert options.store_options["is_host"] == "1"
    with pytest.raises(ConfigurationError, match="needs --nnodes=1"):
        parse_options("localhost:0", "job", 1, 2, {})
    with pytest.raises(ConfigurationError, match="must host, but is_host=0"):
        parse_options("localhost:0", "job", 1, 1, {"is_host": "no"})


def test_the_entry_point_module_imports_no_torch() -> None:
    code = (
        "import sys, rdzv.torchrun.plugin as p\n"
        "assert callable(p.handler_creator())\n"
        "assert 'torch' not in sys.modules\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stderr
