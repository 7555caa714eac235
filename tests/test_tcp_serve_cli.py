"""``rdzv serve`` as a command: help, the port line, clean shutdown on signals."""

from __future__ import annotations

import signal

from click.testing import CliRunner

from rdzv.cli.main import main
from rdzv.registry import open_store
from rdzv.testing.servers import start_server


def test_serve_help_explains_token_port_zero_and_limits() -> None:
    result = CliRunner().invoke(main, ["serve", "--help"])
    assert result.exit_code == 0
    for text in ["--token-file", "--insecure", "--port 0", "--max-connections", "--tls-cert", "RDZV_TOKEN"]:
        assert text in result.output


def test_serve_reports_its_port_and_exits_cleanly_on_sigterm() -> None:
    server = start_server(token="cli-token")
    try:
        with open_store(server.url) as store:
            store.put("k", b"v")
        assert server.port > 0
        server.process.send_signal(signal.SIGTERM)
        assert server.process.wait(20) == 0
        assert "shutting down" in server.log_text()
    finally:
        server.stop()


def test_serve_exits_cleanly_on_sigint() -> None:
    server = start_server(token=None)
    server.process.send_signal(signal.SIGINT)
    assert server.process.wait(20) == 0
    server.stop()
