"""`probe helper serve --tls-cert --tls-key` (no root: loopback): HTTPS, a renewed certificate
taken on SIGHUP without a restart, a bad pair refused at start."""

from __future__ import annotations

import hashlib
import json
import signal
import socket
import ssl
import subprocess
import sys
import time
from pathlib import Path

import pytest
import trustme


def _pair(ca: trustme.CA, directory: Path) -> tuple[Path, Path, bytes]:
    leaf = ca.issue_cert("127.0.0.1")
    cert, key = directory / "fullchain.pem", directory / "privkey.pem"
    staged_cert, staged_key = directory / "new-cert.pem", directory / "new-key.pem"
    staged_cert.write_bytes(b"".join(blob.bytes() for blob in leaf.cert_chain_pems))
    staged_key.write_bytes(leaf.private_key_pem.bytes())
    staged_cert.replace(cert)  # as a renewal would: each file whole at once
    staged_key.replace(key)
    der = ssl.PEM_cert_to_DER_cert(leaf.cert_chain_pems[0].bytes().decode())
    return cert, key, hashlib.sha256(der).digest()


def _presented(port: int, ca: trustme.CA) -> tuple[bytes, dict]:
    """The certificate the helper presents to a new connection, and its hello."""
    context = ssl.create_default_context()
    ca.configure_trust(context)
    with socket.create_connection(("127.0.0.1", port), timeout=10) as raw:
        with context.wrap_socket(raw, server_hostname="127.0.0.1") as tls:
            der = tls.getpeercert(binary_form=True)
            tls.sendall(b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
            answer = b""
            while chunk := tls.recv(65536):
                answer += chunk
    assert der is not None
    return hashlib.sha256(der).digest(), json.loads(answer.split(b"\r\n\r\n", 1)[1])


@pytest.fixture
def tls_helper(tmp_path):
    ca = trustme.CA()
    cert, key, first = _pair(ca, tmp_path)
    argv = [sys.executable, "-m", "probe.cli", "helper", "serve", "--listen", "127.0.0.1:0",
            "--tls-cert", str(cert), "--tls-key", str(key)]  # fmt: skip
    process = subprocess.Popen(argv, stderr=subprocess.PIPE, text=True)
    try:
        line = process.stderr.readline()
        assert "listening on" in line, line + (process.stderr.read() if process.poll() else "")
        port = int(line.rsplit(":", 1)[1])
        yield ca, tmp_path, port, first, process
    finally:
        process.terminate()
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def test_the_helper_serves_https_and_takes_a_renewed_certificate_on_sighup(tls_helper):
    ca, directory, port, first, process = tls_helper
    presented, hello = _presented(port, ca)
    assert presented == first and hello == {"message": "Hello OONItarian!"}
    _cert, _key, renewed = _pair(ca, directory)
    assert renewed != first
    process.send_signal(signal.SIGHUP)
    deadline = time.monotonic() + 30  # a guard against a hang, not a timing bound
    while (presented := _presented(port, ca)[0]) != renewed and time.monotonic() < deadline:
        time.sleep(0.05)
    assert presented == renewed
    assert process.poll() is None  # no restart


def test_a_pair_that_does_not_load_keeps_the_certificate_in_use(tls_helper):
    ca, directory, port, first, process = tls_helper
    (directory / "privkey.pem").write_text("not a key\n")
    process.send_signal(signal.SIGHUP)
    deadline = time.monotonic() + 30
    seen = ""
    while "certificate not reloaded" not in seen and time.monotonic() < deadline:
        seen += process.stderr.readline()
    assert "certificate not reloaded" in seen
    assert _presented(port, ca)[0] == first and process.poll() is None


def test_a_bad_pair_is_refused_at_start(tmp_path):
    cert, key = tmp_path / "c.pem", tmp_path / "k.pem"
    cert.write_text("not a certificate\n")
    key.write_text("not a key\n")
    result = subprocess.run(
        [sys.executable, "-m", "probe.cli", "helper", "serve", "--listen", "127.0.0.1:0",
         "--tls-cert", str(cert), "--tls-key", str(key)],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert result.returncode != 0 and "Traceback" not in result.stderr, result.stderr
    lone = subprocess.run(
        [sys.executable, "-m", "probe.cli", "helper", "serve", "--tls-cert", str(cert)],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert lone.returncode == 2 and "go together" in lone.stderr
