"""Throw-away TLS material for loopback tests, made with the ``openssl`` command line.

:func:`make_tls_files` writes a CA and a server and a client certificate signed
by it (EC P-256, valid one day, server name ``IP:127.0.0.1`` and ``localhost``).
The certificates carry key identifiers, so they verify under Python's strict
X.509 checking as well.
"""

from __future__ import annotations

import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

__all__ = ["TlsFiles", "make_tls_files"]

_EXTENSIONS = """\
basicConstraints=CA:FALSE
keyUsage=digitalSignature,keyEncipherment
extendedKeyUsage=serverAuth,clientAuth
subjectAltName=IP:127.0.0.1,DNS:localhost
subjectKeyIdentifier=hash
authorityKeyIdentifier=keyid,issuer
"""


@dataclass(frozen=True)
class TlsFiles:
    """PEM files: the CA, the server's certificate and key, a client's certificate and key."""

    ca: Path
    server_cert: Path
    server_key: Path
    client_cert: Path
    client_key: Path


def make_tls_files(directory: Path) -> TlsFiles:
    """Create a CA, a server and a client certificate in ``directory``."""
    openssl = shutil.which("openssl")
    if openssl is None:
        raise FileNotFoundError("the openssl command is needed to make test certificates")
    directory.mkdir(parents=True, exist_ok=True)
    ext = directory / "leaf.ext"
    ext.write_text(_EXTENSIONS)
    ca, ca_key = directory / "ca.pem", directory / "ca.key"
    _run(
        openssl, "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
        "-keyout", ca_key, "-out", ca, "-days", "1", "-subj", "/CN=rdzv test CA",
    )  # fmt: skip
    files = {}
    for name in ("server", "client"):
        key, csr, cert = directory / f"{name}.key", directory / f"{name}.csr", directory / f"{name}.pem"
        _run(
            openssl, "req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
            "-keyout", key, "-out", csr, "-subj", f"/CN=rdzv test {name}",
        )  # fmt: skip
        _run(
            openssl, "x509", "-req", "-in", csr, "-CA", ca, "-CAkey", ca_key, "-CAcreateserial",
            "-out", cert, "-days", "1", "-extfile", ext,
        )  # fmt: skip
        files[name] = (cert, key)
    return TlsFiles(ca, files["server"][0], files["server"][1], files["client"][0], files["client"][1])


def _run(*args: str | Path) -> None:
    result = subprocess.run([str(a) for a in args], capture_output=True, text=True, timeout=30, check=False)
    if result.returncode != 0:
        raise RuntimeError(f"{' '.join(map(str, args[:3]))} failed: {result.stderr.strip()}")
