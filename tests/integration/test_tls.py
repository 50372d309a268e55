"""``openmaas serve --tls-cert --tls-key`` serves HTTPS (with HSTS) and nothing in plain HTTP."""

from __future__ import annotations

import datetime
import ipaddress
import signal
import ssl
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from click.testing import CliRunner
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from openmaas.cli import cli
from tests.helpers.server import free_port, server_env


def _self_signed(directory: Path) -> tuple[Path, Path]:
    """A certificate for 127.0.0.1 (signed by its own key) and that key, as PEM files."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(key.public_key()), critical=False
        )
        .sign(key, hashes.SHA256())
    )
    cert_file, key_file = directory / "cert.pem", directory / "key.pem"
    cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_file, key_file


def _trusting(cert_file: Path) -> ssl.SSLContext:
    return ssl.create_default_context(cafile=str(cert_file))


@pytest.fixture(scope="module")
def tls_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Path, int]]:
    """``openmaas serve`` over HTTPS: its https URL, the certificate to trust, its port."""
    root = tmp_path_factory.mktemp("tls")
    cert_file, key_file = _self_signed(root)
    port = free_port()
    log_file = root / "server.log"
    command = [
        sys.executable,
        "-m",
        "openmaas",
        "serve",
        "--port",
        str(port),
        "--data-dir",
        str(root / "data"),
        "--tls-cert",
        str(cert_file),
        "--tls-key",
        str(key_file),
    ]
    env = server_env(OPENMAAS_DEMO_MODELS="false", OPENMAAS_INFERENCE_THREADS="1")
    with log_file.open("wb") as log:
        process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=env)
    url = f"https://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        with httpx.Client(verify=_trusting(cert_file)) as client:
            while True:
                if process.poll() is not None:
                    raise RuntimeError(f"server exited early:\n{log_file.read_text()}")
                if time.monotonic() > deadline:
                    raise RuntimeError(f"server not ready in 60s:\n{log_file.read_text()}")
                try:
                    if client.get(f"{url}/v2/health/ready", timeout=1).status_code == 200:
                        break
                except httpx.TransportError:
                    time.sleep(0.1)
        assert "Serving on https://" in log_file.read_text()
        yield url, cert_file, port
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


def test_https_with_security_headers_and_hsts(tls_server: tuple[str, Path, int]) -> None:
    url, cert_file, _ = tls_server
    response = httpx.get(f"{url}/v2/health/live", verify=_trusting(cert_file))
    assert response.status_code == 200
    assert response.json() == {"live": True}
    assert response.headers["strict-transport-security"].startswith("max-age=")
    assert response.headers["x-content-type-options"] == "nosniff"
    assert response.headers["x-frame-options"] == "DENY"
    assert response.headers["referrer-policy"] == "no-referrer"
    assert response.headers["cache-control"] == "no-store"
    assert response.headers["content-security-policy"].startswith("default-src 'none'")


def test_untrusted_certificate_is_refused(tls_server: tuple[str, Path, int]) -> None:
    url, _, _ = tls_server
    with pytest.raises(httpx.ConnectError):
        httpx.get(f"{url}/v2/health/live")  # the system CAs do not vouch for it


def test_plain_http_to_the_tls_port_fails(tls_server: tuple[str, Path, int]) -> None:
    _, _, port = tls_server
    with pytest.raises(httpx.TransportError):
        httpx.get(f"http://127.0.0.1:{port}/v2/health/live", timeout=5)


@pytest.mark.parametrize("flag", ["--tls-cert", "--tls-key"])
def test_half_a_tls_configuration_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, flag: str
) -> None:
    monkeypatch.delenv("OPENMAAS_TLS_CERT", raising=False)
    monkeypatch.delenv("OPENMAAS_TLS_KEY", raising=False)
    cert_file, key_file = _self_signed(tmp_path)
    given = cert_file if flag == "--tls-cert" else key_file
    result = CliRunner().invoke(cli, ["serve", "--data-dir", str(tmp_path / "d"), flag, str(given)])
    assert result.exit_code == 2
    assert "--tls-cert and --tls-key" in result.output
    assert not (tmp_path / "d").exists()  # refused before touching the data directory


def test_a_key_that_does_not_match_is_refused(tmp_path: Path) -> None:
    cert_file, _ = _self_signed(tmp_path)
    other = tmp_path / "other"
    other.mkdir()
    _, other_key = _self_signed(other)
    args = ["serve", "--data-dir", str(tmp_path / "d"), "--tls-cert", str(cert_file)]
    result = CliRunner().invoke(cli, [*args, "--tls-key", str(other_key)])
    assert result.exit_code == 2
    assert "cannot serve HTTPS" in result.output
