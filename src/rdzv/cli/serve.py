"""``rdzv serve``: run the embedded TCP store server in the foreground."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import ssl
from pathlib import Path
from typing import TYPE_CHECKING

import click

from rdzv.cli.options import env_token, read_token, token_options
from rdzv.errors import ConfigurationError
from rdzv.store.tcp.protocol import Limits

if TYPE_CHECKING:
    from rdzv.store.tcp.metrics import ServerMetrics

__all__ = ["serve"]

log = logging.getLogger("rdzv.serve")
_DEFAULTS = Limits()


def _raise_fd_limit(connections: int) -> None:
    try:
        import resource
    except ImportError:  # pragma: no cover - not on POSIX
        return
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = connections + 64
    if soft != resource.RLIM_INFINITY and soft < wanted:
        target = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
        if target < wanted:
            log.warning("open-file limit %d allows fewer than %d connections", target, connections)


def _metrics(host: str, port: int | None) -> ServerMetrics | None:
    """Prometheus metrics with per-run figures, served over HTTP before the store listens."""
    if port is None:
        return None
    from rdzv.rendezvous.runmetrics import RunTracker
    from rdzv.store.tcp.metrics import ServerMetrics

    metrics = ServerMetrics(runs=RunTracker())
    try:
        bound_host, bound_port = metrics.serve_http(host, port)
    except ConfigurationError as exc:
        raise click.ClickException(str(exc)) from exc
    metrics.url = f"http://{bound_host}:{bound_port}/metrics"
    return metrics


async def _run(
    host: str,
    port: int,
    token: bytes | None,
    tls: ssl.SSLContext | None,
    limits: Limits,
    metrics: ServerMetrics | None,
) -> None:
    from rdzv.store.tcp.server import StoreServer

    server = StoreServer(token=token, limits=limits, metrics=metrics)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    bound_host, bound_port = await server.start(host, port, tls=tls)
    click.echo(f"rdzv serve: listening on {bound_host}:{bound_port}")  # after the handlers: see --help
    if metrics is not None:
        click.echo(f"rdzv serve: metrics on {metrics.url}")
    log.info(
        "serving on %s:%d (auth %s, TLS %s, max %d connections)",
        bound_host,
        bound_port,
        "on" if token else "OFF",
        "on" if tls else "off",
        limits.max_connections,
    )
    await stop.wait()
    log.info("shutting down")
    await server.aclose()


@click.command()
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option("--port", default=29400, show_default=True, type=int, help="Port; 0 picks a free one.")
@token_options
@click.option(
    "--insecure", is_flag=True, help="Allow a non-loopback --host without a token (anyone may connect)."
)
@click.option("--tls-cert", type=click.Path(exists=True, dir_okay=False), help="TLS certificate (PEM).")
@click.option("--tls-key", type=click.Path(exists=True, dir_okay=False), help="TLS private key (PEM).")
@click.option("--max-frame", default=_DEFAULTS.max_frame, show_default=True, help="Largest frame in bytes.")
@click.option("--max-key", default=_DEFAULTS.max_key, show_default=True, help="Longest key in bytes.")
@click.option("--max-value", default=_DEFAULTS.max_value, show_default=True, help="Largest value in bytes.")
@click.option("--max-keys", default=_DEFAULTS.max_keys, show_default=True, help="Most keys stored.")
@click.option("--max-connections", default=_DEFAULTS.max_connections, show_default=True, help="Most clients.")
@click.option(
    "--max-unauthenticated",
    default=_DEFAULTS.max_unauthenticated,
    show_default=True,
    help="Most connections still in their handshake (beyond it the oldest is closed).",
)
@click.option(
    "--max-unauthenticated-per-peer",
    default=_DEFAULTS.max_unauthenticated_per_peer,
    show_default=True,
    help="Most connections in their handshake from one address.",
)
@click.option(
    "--frame-timeout",
    default=_DEFAULTS.frame_timeout,
    show_default=True,
    help="Seconds a started frame may take to arrive whole.",
)
@click.option(
    "--metrics-port", type=click.IntRange(0, 65535),
    help="Serve Prometheus metrics at http://METRICS-HOST:PORT/metrics (0: a free port; "
    "needs rdzv[metrics]).",
)  # fmt: skip
@click.option("--metrics-host", help="Address for --metrics-port (default: --host).")
@click.option(
    "--log-level",
    default="info",
    show_default=True,
    type=click.Choice(["debug", "info", "warning", "error"], case_sensitive=False),
)
def serve(
    host: str,
    port: int,
    token: str | None,
    token_file: Path | None,
    insecure: bool,
    tls_cert: str | None,
    tls_key: str | None,
    max_frame: int,
    max_key: int,
    max_value: int,
    max_keys: int,
    max_connections: int,
    max_unauthenticated: int,
    max_unauthenticated_per_peer: int,
    frame_timeout: float,
    metrics_port: int | None,
    metrics_host: str | None,
    log_level: str,
) -> None:
    """Run the embedded rdzv store server until SIGTERM or SIGINT.

    Nodes reach it as tcp://HOST:PORT?token=TOKEN. Clients prove they know the
    token by HMAC challenge-response, the server proves it back, and every
    later frame carries a MAC; the token itself never crosses the wire. A
    token for one run only comes from `rdzv token --run-id RUN`.
    Listening on a non-loopback address requires a token unless --insecure.
    With --port 0 the chosen port is printed on stdout as
    `rdzv serve: listening on HOST:PORT`. State is kept in memory only: if the
    server stops, clients fail with StoreUnavailableError. --metrics-port serves
    Prometheus metrics (connections, operations and their latency, auth failures,
    waiters, leases, keys, bytes, and per run: round, members, nodes waiting,
    rounds completed, members lost, last rendezvous); its address
    follows on the next line: `rdzv serve: metrics on http://HOST:PORT/metrics`.
    """
    from rdzv.store.tcp.client import server_tls
    from rdzv.store.tcp.hosting import is_loopback
    from rdzv.store.tcp.server import new_event_loop

    logging.basicConfig(level=log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    text = read_token(token, token_file) or env_token()
    secret = text.encode() if text else None
    if secret is None and not is_loopback(host):
        if not insecure:
            raise click.UsageError(
                f"refusing to listen on non-loopback {host} without a token: "
                "give --token/--token-file/RDZV_TOKEN, or --insecure to let anyone connect"
            )
        log.warning(
            "listening on %s WITHOUT authentication (--insecure): anyone who reaches it may connect", host
        )
    try:
        limits = Limits(
            max_frame,
            max_key,
            max_value,
            max_keys,
            max_connections,
            max_unauthenticated=max_unauthenticated,
            max_unauthenticated_per_peer=max_unauthenticated_per_peer,
            frame_timeout=frame_timeout,
        )
        tls = server_tls(tls_cert, tls_key)
    except (ValueError, ConfigurationError) as exc:
        raise click.UsageError(str(exc)) from exc
    _raise_fd_limit(max_connections + max_unauthenticated)
    metrics = _metrics(metrics_host or host, metrics_port)
    loop = new_event_loop()
    try:
        loop.run_until_complete(_run(host, port, secret, tls, limits, metrics))
    except OSError as exc:
        raise click.ClickException(f"cannot listen on {host}:{port}: {exc}") from exc
    finally:
        loop.close()
        if metrics is not None:
            metrics.close()
