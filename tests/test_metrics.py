"""Prometheus metrics of the store server, scraped over HTTP from real servers and parsed."""

from __future__ import annotations

import concurrent.futures
import urllib.request
from collections.abc import Iterator

import pytest

from rdzv.errors import AuthenticationError, ConfigurationError, StoreError
from rdzv.registry import open_store
from rdzv.rendezvous.node import Rendezvous
from rdzv.store.tcp.client import TcpStore
from rdzv.testing.servers import serve_process

parser = pytest.importorskip("prometheus_client.parser")

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]
BOUNDED_LABELS = {"op", "state", "run", "le"}


def scrape(url: str) -> Samples:
    with urllib.request.urlopen(url, timeout=10) as response:
        text = response.read().decode()
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in parser.text_string_to_metric_families(text)
        for sample in family.samples
    }


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples[(name, tuple(sorted(labels.items())))]


def form_round(urls: list[str], run_id: str) -> list[Rendezvous]:
    nodes = [
        Rendezvous(  # a short heartbeat: a fresh server holds a first round back one interval
            url,
            run_id,
            len(urls),
            len(urls),
            node_id=f"node{i}",
            addr=f"127.0.0.1:{9000 + i}",
            heartbeat_interval=0.5,
        )
        for i, url in enumerate(urls)
    ]
    with concurrent.futures.ThreadPoolExecutor(len(nodes)) as pool:
        infos = list(pool.map(lambda node: node.next_rendezvous(), nodes))
    assert sorted(info.rank for info in infos) == list(range(len(urls)))
    return nodes


@pytest.fixture
def metrics_server() -> Iterator[tuple[str, str]]:
    with serve_process(token="metrics-token", args=["--metrics-port", "0"]) as server:
        assert server.metrics_url is not None
        yield server.url, server.metrics_url


def test_serve_metrics_report_connections_operations_auth_failures_and_runs(
    metrics_server: tuple[str, str],
) -> None:
    url, metrics_url = metrics_server
    nodes = form_round([url, url, url], "job")
    with pytest.raises(AuthenticationError):
        open_store(url.replace("metrics-token", "wrong-token")).get("k")
    samples = scrape(metrics_url)
    assert value(samples, "rdzv_store_connections", state="authenticated") >= 3
    assert value(samples, "rdzv_store_auth_failures_total") == 1
    assert value(samples, "rdzv_store_operation_seconds_count", op="grant") == 3
    assert value(samples, "rdzv_store_operation_seconds_count", op="put_many") == 1
    assert value(samples, "rdzv_store_leases") == 3
    assert value(samples, "rdzv_store_bytes_in_total") > 0
    assert value(samples, "rdzv_store_bytes_out_total") > 0
    assert value(samples, "rdzv_run_round", run="job") == 1
    assert value(samples, "rdzv_run_members", run="job") == 3
    assert value(samples, "rdzv_run_rounds_completed_total", run="job") == 1
    assert value(samples, "rdzv_run_members_lost_total", run="job") == 0
    assert value(samples, "rdzv_run_last_rendezvous_timestamp_seconds", run="job") > 1.7e9

    nodes[2].shutdown()  # leaves: its lease is revoked and its rank key vanishes
    after = scrape(metrics_url)
    assert value(after, "rdzv_run_members_lost_total", run="job") == 1
    assert value(after, "rdzv_run_members", run="job") == 2
    assert value(after, "rdzv_store_leases") == 2
    for node in nodes[:2]:
        node.shutdown()


def test_metric_labels_stay_bounded_no_node_or_connection_label(metrics_server: tuple[str, str]) -> None:
    url, metrics_url = metrics_server
    nodes = form_round([url, url], "bounded")
    with open_store(url) as store, pytest.raises(StoreError, match="unknown operation"):
        store._call("no-such-op", [], retry=False)  # a hostile client's made-up operation name
    samples = scrape(metrics_url)
    for node in nodes:
        node.shutdown()
    labels = {name for _, pairs in samples for name, _ in pairs}
    assert labels <= BOUNDED_LABELS
    values = {v for _, pairs in samples for _, v in pairs}
    assert not any("node" in v for v in values), values
    ops = {dict(pairs)["op"] for name, pairs in samples if name.startswith("rdzv_store_operation")}
    assert "no-such-op" not in ops


def test_hosting_node_serves_metrics_with_run_figures_from_the_url_option() -> None:
    host = Rendezvous(
        "tcp://127.0.0.1:0?is_host=1&metrics_port=0&token=hosted",
        "hosted-run",
        2,
        2,
        node_id="host",
        addr="127.0.0.1:9100",
        heartbeat_interval=0.5,
    )
    store = host.store
    assert isinstance(store, TcpStore)
    assert store.metrics_address is not None
    other = Rendezvous(
        f"{store.url}?is_host=0&token=hosted",
        "hosted-run",
        2,
        2,
        node_id="other",
        addr="127.0.0.1:9101",
        heartbeat_interval=0.5,
    )
    try:
        with concurrent.futures.ThreadPoolExecutor(2) as pool:
            list(pool.map(lambda node: node.next_rendezvous(), [host, other]))
        samples = scrape("http://{}:{}/metrics".format(*store.metrics_address))
        assert value(samples, "rdzv_run_round", run="hosted-run") == 1
        assert value(samples, "rdzv_run_members", run="hosted-run") == 2
        assert value(samples, "rdzv_store_connections", state="authenticated") == 2
    finally:
        other.shutdown()
        host.shutdown()


@pytest.mark.parametrize("port", ["http", "-1", "70000"])
def test_bad_metrics_port_is_a_configuration_error_naming_the_option(port: str) -> None:
    with pytest.raises(ConfigurationError, match="metrics_port"):
        open_store(f"tcp://127.0.0.1:1?is_host=0&metrics_port={port}")
