"""Parsing etcd URLs and options: clear ConfigurationErrors, no server needed."""

from __future__ import annotations

import pytest

from rdzv.errors import ConfigurationError
from rdzv.registry import open_store
from rdzv.store.etcd import parse_url


def test_hosts_ports_prefix_and_default_port_are_parsed() -> None:
    config = parse_url("etcd://a:1,b,[::1]:3/jobs/x/")
    assert config.endpoints == ("http://a:1", "http://b:2379", "http://[::1]:3")
    assert config.prefix == "/jobs/x/"
    assert not config.tls


def test_a_url_without_a_path_uses_the_whole_keyspace() -> None:
    assert parse_url("etcd://h:2379").prefix == ""


def test_etcd_https_uses_tls_endpoints() -> None:
    config = parse_url("etcd+https://h:2379/p")
    assert config.endpoints == ("https://h:2379",)
    assert config.tls


def test_query_options_and_keyword_options_are_merged_keywords_winning() -> None:
    config = parse_url("etcd://h/p?timeout=3&user=u&password=secret", timeout="4")
    assert (config.timeout, config.user, config.password) == (4.0, "u", "secret")
    assert "secret" not in config.display_url


def test_unknown_option_lists_the_valid_ones() -> None:
    with pytest.raises(ConfigurationError, match=r"unknown etcd option\(s\) lease_ttl.*user.*timeout"):
        parse_url("etcd://h/p?lease_ttl=5")


def test_registry_reports_unknown_options_through_open_store() -> None:
    with pytest.raises(ConfigurationError, match="bogus"):
        open_store("etcd://127.0.0.1:1/p?bogus=1")


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("etcd:///p", "names no host"),
        ("etcd://h:notaport/p", "invalid port"),
        ("etcd://h:70000/p", "invalid port"),
        ("etcd://a,,b/p", "empty host"),
        ("etcd://u:pw@h/p", "credentials before the host"),
        ("etcd://h/p?timeout=0", "timeout must be a positive"),
        ("etcd://h/p?timeout=soon", "timeout must be a positive"),
        ("etcd://h/p?user=u", "user and password must be given together"),
        ("etcd://h/p?ca=/etc/hostname", "need TLS: use an etcd\\+https"),
        ("etcd+https://h/p?cert=/etc/hostname", "cert and key must be given together"),
        ("etcd+https://h/p?ca=/no/such/ca.pem", "no such file"),
        ("redis://h/p", "not an etcd URL"),
    ],
)
def test_bad_urls_raise_configuration_errors_naming_the_problem(url: str, message: str) -> None:
    with pytest.raises(ConfigurationError, match=message):
        parse_url(url)


def test_credentials_in_the_host_part_are_not_echoed() -> None:
    with pytest.raises(ConfigurationError) as info:
        parse_url("etcd://u:hunter2@h/p")
    assert "hunter2" not in str(info.value)
