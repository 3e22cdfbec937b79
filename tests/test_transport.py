"""Transport and session: TLS verified by clients and pilots, server-side monitor sessions,
same-origin redirects, forwarded addresses from configured proxies only, no open --no-auth."""
from __future__ import annotations

import datetime
import ipaddress
import os
import re
import ssl
import subprocess
import sys
import urllib.error
import urllib.request

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from conftest import REPO
from p3s.pilot.client import Client, P3SError


class NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args, **kwargs):
        return None


def self_signed(directory) -> tuple[str, str]:
    """A certificate for 127.0.0.1 and localhost, and its key (PEM files)."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "p3s test")])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
                                                        x509.DNSName("localhost")]), critical=False)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(key, hashes.SHA256()))
    cert_path, key_path = directory / "cert.pem", directory / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    key_path.chmod(0o600)
    return str(cert_path), str(key_path)


def post_form(url: str, data: bytes, context: ssl.SSLContext | None = None, cookie: str | None = None):
    request = urllib.request.Request(url, data=data)
    if cookie:
        request.add_header("Cookie", cookie)
    opener = urllib.request.build_opener(NoRedirect, urllib.request.HTTPSHandler(context=context))
    try:
        with opener.open(request, timeout=10) as response:
            return response.status, response.headers
    except urllib.error.HTTPError as exc:
        return exc.code, exc.headers


def test_tls_is_served_and_verified_by_clients_and_pilots(make_server, tmp_path):
    cert, key = self_signed(tmp_path)
    server = make_server(certfile=cert, keyfile=key)
    assert server.url.startswith("https://")
    trusting = Client(server.url, server.token, retries=0, ca_file=cert)
    assert trusting.call("GET", "/whoami")["role"] == "admin"
    with pytest.raises(P3SError) as refused:                     # the system's CAs do not know it
        Client(server.url, server.token, retries=0).call("GET", "/whoami")
    assert refused.value.status == 0 and "CERTIFICATE_VERIFY_FAILED" in refused.value.message
    plain = Client(server.url.replace("https", "http"), server.token, retries=0)
    with pytest.raises(P3SError):
        plain.call("GET", "/whoami")
    job = trusting.create_jobs([{"payload": "echo over tls"}])[0]["uuid"]
    env = {**{k: v for k, v in os.environ.items() if not k.startswith("P3S_")}, "P3S_TOKEN": server.token}
    pilot = [sys.executable, "-m", "p3s.cli.pilot", "-S", server.url, "-c", "1", "-p", "1", "--register-deadline", "1",
             "--logdir", str(tmp_path / "l"), "--joblogdir", str(tmp_path / "j"), "--workdir", str(tmp_path / "w")]
    untrusting = subprocess.run(pilot, env=env, capture_output=True, text=True, timeout=60)
    assert untrusting.returncode == 3 and "CERTIFICATE_VERIFY_FAILED" in untrusting.stderr
    done = subprocess.run(pilot + ["--ca-file", cert], env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert trusting.get("jobs", job)["stdout_tail"] == "over tls"
    # the monitor's cookie is Secure on https
    context = ssl.create_default_context(cafile=cert)
    status, headers = post_form(server.url + "/login", f"token={server.token}".encode(), context)
    assert status == 302 and "Secure" in headers["Set-Cookie"]


def session_of(server, token: str) -> str:
    status, headers = post_form(server.url + "/login", f"token={token}".encode())
    assert status == 302
    return re.search(r"p3s_session=([^;]+)", headers["Set-Cookie"]).group(1)


def api_with_cookie(server, session: str) -> int:
    request = urllib.request.Request(server.url + "/api/v1/whoami")
    request.add_header("Cookie", f"p3s_session={session}")
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status
    except urllib.error.HTTPError as exc:
        return exc.code


def test_the_cookie_is_a_server_side_session_that_logout_revokes(server):
    session = session_of(server, server.token)
    assert server.token not in session and api_with_cookie(server, session) == 200
    with urllib.request.urlopen(server.url + "/logout", timeout=10) as response:    # GET only shows a button
        assert b'method="post"' in response.read()
    assert api_with_cookie(server, session) == 200
    status, headers = post_form(server.url + "/logout", b"", cookie=f"p3s_session={session}")
    assert status == 302 and headers["Location"] == "/login"
    assert api_with_cookie(server, session) == 401                 # a copy of the cookie is worthless now
    other = session_of(server, server.token)
    server.restart()
    assert api_with_cookie(server, other) == 200                    # sessions outlive a restart
    stored = b"".join(p.read_bytes() for p in (server.data_dir / "db").rglob("*") if p.is_file())
    assert other.encode() not in stored


@pytest.mark.parametrize("target", ["/%5Cevil.example", "//evil.example", "https://evil.example/",
                                    "/%5C%5Cevil.example", "javascript:alert(1)", "%2F%2Fevil.example",
                                    "/%09/evil.example"])
def test_login_redirects_only_to_paths_of_this_server(server, target):
    status, headers = post_form(server.url + "/login?next=" + target, f"token={server.token}".encode())
    assert status == 302 and headers["Location"] == "/", headers["Location"]


def test_login_keeps_a_local_next(server):
    status, headers = post_form(server.url + "/login?next=/jobs%3Fstate%3Dfailed", f"token={server.token}".encode())
    assert status == 302 and headers["Location"] == "/jobs?state=failed"


def whoami_from(server, **headers: str) -> str:
    request = urllib.request.Request(server.url + "/api/v1/whoami", headers={
        "Authorization": f"Bearer {server.token}", **headers})
    with urllib.request.urlopen(request, timeout=10) as response:
        import json
        return json.loads(response.read())["address"]


def test_forwarded_addresses_are_believed_from_configured_proxies_only(make_server):
    untrusting = make_server()
    assert whoami_from(untrusting, **{"X-Real-Ip": "6.6.6.6"}) == "127.0.0.1"
    assert whoami_from(untrusting, **{"X-Forwarded-For": "6.6.6.6"}) == "127.0.0.1"
    behind_proxy = make_server(trusted_proxies=["127.0.0.0/8"])
    assert whoami_from(behind_proxy, **{"X-Real-Ip": "6.6.6.6"}) == "6.6.6.6"
    assert whoami_from(behind_proxy, **{"X-Forwarded-For": "1.2.3.4, 6.6.6.6, 127.0.0.1"}) == "6.6.6.6"


def run_server(tmp_path, *args: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith("P3S_")}
    return subprocess.run([sys.executable, "-m", "p3s.cli.server", "--data-dir", str(tmp_path / "d"), "--port", "0",
                           *args], env=env, capture_output=True, text=True, timeout=30, cwd=REPO)


def test_no_auth_on_a_network_address_is_refused_unless_asked_for_loudly(make_server, tmp_path):
    refused = run_server(tmp_path, "--no-auth", "--host", "0.0.0.0")
    assert refused.returncode == 2 and "--i-understand-no-auth-is-open" in refused.stderr
    assert "run any command on every worker node" in refused.stderr
    server = make_server(auth=False, host="0.0.0.0", i_understand_no_auth_is_open=True)
    assert "WARNING" in server.log_path.read_text() and "AUTHENTICATION IS OFF" in server.log_path.read_text()
    with urllib.request.urlopen(server.url + "/", timeout=10) as response:
        assert "AUTHENTICATION IS OFF" in response.read().decode()
    local = make_server(auth=False)                                  # loopback: allowed, still said
    with urllib.request.urlopen(local.url + "/", timeout=10) as response:
        assert "Authentication is off" in response.read().decode()


def test_bad_tls_files_are_refused_clearly(tmp_path):
    done = run_server(tmp_path, "--certfile", str(tmp_path / "missing.pem"), "--keyfile", str(tmp_path / "k.pem"))
    assert done.returncode == 2 and "cannot load the TLS certificate" in done.stderr
    done = run_server(tmp_path, "--certfile", str(tmp_path / "missing.pem"))
    assert done.returncode == 2 and "both --certfile and --keyfile" in done.stderr


def test_a_session_ends_when_its_token_is_removed_from_the_configuration(make_server):
    import yaml

    admin = {"token": "admin-token-0123456789", "role": "admin", "name": "boss"}
    client = {"token": "client-token-0123456789", "role": "client", "name": "leaver"}
    server = make_server(tokens=[admin, client])
    session = session_of(server, client["token"])
    assert api_with_cookie(server, session) == 200
    settings = yaml.safe_load(server.config_path.read_text())
    settings["tokens"] = [admin]
    server.config_path.write_text(yaml.safe_dump(settings))
    server.restart()
    assert api_with_cookie(server, session) == 401
