"""HTTP/2: with PYPM_HTTP2=1, `pypm lock` and `pypm sync` speak HTTP/2 to an index that offers it (TLS + ALPN
on 127.0.0.1); by default, HTTP/1.1 to the same server.

The server is a small HTTP/2 front (the `h2` library, a certificate made here with `cryptography`)
for the suite's IndexServer: it records the protocol and connection of every request, so the
test sees what pypm negotiated rather than what it was configured to try.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import socket
import ssl
import threading
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from tests.e2e.test_sync import assert_venv_exact, write_project

pytest.importorskip("h2", reason="the h2 package (HTTP/2 for httpx) is not installed")
import h2.config  # noqa: E402
import h2.connection  # noqa: E402
import h2.events  # noqa: E402


def make_cert(dest: Path) -> tuple[Path, Path]:
    """A self-signed certificate for 127.0.0.1 (cert.pem, key.pem)."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = dt.datetime.now(dt.timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now - dt.timedelta(days=1))
            .not_valid_after(now + dt.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), False)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), True)
            .sign(key, hashes.SHA256()))
    cert_path, key_path = dest / "cert.pem", dest / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return cert_path, key_path


class H2Front:
    """TLS on 127.0.0.1 with ALPN h2/http/1.1, forwarding each request to `backend` (http://...)."""

    FORWARD = ("accept", "range", "if-range", "if-none-match", "if-modified-since")

    def __init__(self, backend: str, cert: Path, key: Path) -> None:
        self.backend = backend.rstrip("/")
        self.ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        self.ctx.load_cert_chain(cert, key)
        self.ctx.set_alpn_protocols(["h2", "http/1.1"])
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.requests: list[tuple[str, int, str]] = []  # (protocol, connection number, path)
        self._lock = threading.Lock()
        self._conns = 0
        threading.Thread(target=self._accept, daemon=True).start()

    @property
    def url(self) -> str:
        return f"https://127.0.0.1:{self.port}/simple/"

    def close(self) -> None:
        self.sock.close()

    def _accept(self) -> None:
        while True:
            try:
                raw, _ = self.sock.accept()
            except OSError:
                return
            with self._lock:
                self._conns += 1
                n = self._conns
            threading.Thread(target=self._serve, args=(raw, n), daemon=True).start()

    def _fetch(self, method: str, path: str, headers: dict[str, str]) -> tuple[int, list[tuple[str, str]], bytes]:
        req = urllib.request.Request(self.backend + path, method=method,
                                     headers={k: v for k, v in headers.items() if k in self.FORWARD})
        try:
            with urllib.request.urlopen(req, timeout=30) as r:
                status, hdrs, body = r.status, r.getheaders(), r.read()
        except urllib.error.HTTPError as e:
            status, hdrs, body = e.code, e.headers.items(), e.read()
        keep = [(k.lower(), v) for k, v in hdrs
                if k.lower() in ("content-type", "etag", "last-modified", "content-range", "accept-ranges", "location")]
        return status, keep, body

    def _serve(self, raw: socket.socket, n: int) -> None:
        try:
            conn = self.ctx.wrap_socket(raw, server_side=True)
        except (ssl.SSLError, OSError):
            raw.close()
            return
        try:
            if conn.selected_alpn_protocol() == "h2":
                self._serve_h2(conn, n)
            else:
                self._serve_h1(conn, n)
        except (OSError, ssl.SSLError, h2.exceptions.ProtocolError):
            pass
        finally:
            conn.close()

    def _serve_h1(self, conn: ssl.SSLSocket, n: int) -> None:
        f = conn.makefile("rb")
        while True:
            line = f.readline().decode()
            if not line:
                return
            method, path, _ = line.split(" ", 2)
            headers = {}
            while (h := f.readline().decode().strip()):
                k, _, v = h.partition(":")
                headers[k.strip().lower()] = v.strip()
            self.requests.append(("http/1.1", n, path))
            status, hdrs, body = self._fetch(method, path, headers)
            head = f"HTTP/1.1 {status} X\r\ncontent-length: {len(body)}\r\n" + "".join(f"{k}: {v}\r\n" for k, v in hdrs)
            conn.sendall(head.encode() + b"\r\n" + (b"" if method == "HEAD" else body))

    def _serve_h2(self, conn: ssl.SSLSocket, n: int) -> None:
        h = h2.connection.H2Connection(config=h2.config.H2Configuration(client_side=False, header_encoding="utf-8"))
        h.initiate_connection()
        conn.sendall(h.data_to_send())
        pending: dict[int, dict[str, str]] = {}
        ready: list[tuple[int, dict[str, str]]] = []
        window = threading.Event()

        def pump() -> bool:
            data = conn.recv(65536)
            if not data:
                return False
            for ev in h.receive_data(data):
                if isinstance(ev, h2.events.RequestReceived):
                    pending[ev.stream_id] = {str(k): str(v) for k, v in ev.headers}
                elif isinstance(ev, h2.events.StreamEnded) and ev.stream_id in pending:
                    ready.append((ev.stream_id, pending.pop(ev.stream_id)))
                elif isinstance(ev, h2.events.WindowUpdated):
                    window.set()
            conn.sendall(h.data_to_send())
            return True

        while True:
            while not ready:
                if not pump():
                    return
            sid, headers = ready.pop(0)
            path = headers[":path"]
            self.requests.append(("h2", n, path))
            status, hdrs, body = self._fetch(headers[":method"], path, headers)
            h.send_headers(sid, [(":status", str(status)), ("content-length", str(len(body))), *hdrs],
                           end_stream=not body or headers[":method"] == "HEAD")
            conn.sendall(h.data_to_send())
            if headers[":method"] == "HEAD":
                body = b""
            while body:
                room = min(h.local_flow_control_window(sid), h.max_outbound_frame_size, len(body))
                if room <= 0:  # wait for the client's WINDOW_UPDATE (serving no other stream meanwhile)
                    if not pump():
                        return
                    continue
                h.send_data(sid, body[:room], end_stream=room == len(body))
                body = body[room:]
                conn.sendall(h.data_to_send())


@pytest.fixture
def h2_index(dists, index_server, tmp_path):
    cert, key = make_cert(tmp_path)
    dists.wheel("alpha", "1.0", requires_dist=["beta"])
    dists.wheel("beta", "2.0", modules={"beta/__init__.py": "", "beta/blob.bin": bytes(300_000)})
    backend = index_server(relative_urls=True)  # file links resolve against the front
    front = H2Front(backend.base, cert, key)
    yield front, cert
    front.close()


def _lock_and_sync(pypm, front, tmp_path, env, *flags):
    """`pypm lock` of a project needing alpha against the front, then `pypm sync --locked` (each
    with `flags` first); both must succeed and install alpha 1.0 and beta 2.0. Returns the two
    completed processes."""
    root = write_project(tmp_path / "proj", deps=["alpha"])
    lock = pypm(*flags, "lock", "--index-url", front.url, cwd=root, env=env)
    assert lock.returncode == 0, lock.stderr
    sync = pypm(*flags, "sync", "--locked", cwd=root, env=env)
    assert sync.returncode == 0, sync.stderr
    assert_venv_exact(root / ".venv", {"alpha": "1.0", "beta": "2.0"})
    return lock, sync


@pytest.mark.parametrize("setting, protocol", [("1", "h2"), (None, "http/1.1"), ("0", "http/1.1")])
def test_lock_and_sync_use_http2_when_asked_and_the_index_offers_it(pypm, h2_index, tmp_path, setting,
                                                                    protocol) -> None:
    # HTTP/2 is opt-in (PYPM_HTTP2=1, pypm.http.make_client says why); by default lock and sync
    # speak HTTP/1.1 over TLS to the same server, which offers both through ALPN.
    front, cert = h2_index
    env = {"SSL_CERT_FILE": str(cert), "PYPM_HTTP2": setting}
    _lock_and_sync(pypm, front, tmp_path, {k: v for k, v in env.items() if v is not None})
    paths = [p for _, _, p in front.requests]
    assert any(p.startswith("/simple/alpha") for p in paths) and any(p.endswith("beta-2.0-py3-none-any.whl")
                                                                     for p in paths), front.requests
    assert {proto for proto, _, _ in front.requests} == {protocol}, front.requests


@pytest.mark.parametrize("setting, flags", [("1", ()), (None, ()), ("1", ("-q",))])
def test_without_h2_installed_lock_and_sync_speak_http1(pypm, h2_index, tmp_path, setting, flags) -> None:
    # h2 is an extra (pypm[http2]). Without it, PYPM_HTTP2=1 is reported once per command (not
    # with -q) and ignored: the index that offers h2 through ALPN is spoken to over HTTP/1.1
    # (httpcore, which then has no HTTP/2 connection class, must never be handed one). Without
    # the variable, nothing is said. "Not installed" is a first entry on the path whose h2 fails
    # to import, as a missing package does; the rest of the test environment (which has h2) is
    # left alone.
    front, cert = h2_index
    blocker = tmp_path / "no-h2"
    (blocker / "h2").mkdir(parents=True)
    (blocker / "h2" / "__init__.py").write_text("raise ImportError('h2 is not installed here')\n")
    env = {"SSL_CERT_FILE": str(cert), "PYTHONPATH": str(blocker)}
    if setting is not None:
        env["PYPM_HTTP2"] = setting
    lock, sync = _lock_and_sync(pypm, front, tmp_path, env, *flags)
    assert {proto for proto, _, _ in front.requests} == {"http/1.1"}, front.requests
    warning = "PYPM_HTTP2 is set, but the h2 package is not installed: speaking HTTP/1.1"
    said = setting and not flags
    for r in (lock, sync):
        assert r.stderr.count(warning) == (1 if said else 0), r.stderr
    if said:
        assert "pip install 'pypm[http2]'" in sync.stderr
    else:
        assert "warning" not in lock.stderr + sync.stderr


def test_the_front_also_speaks_http1(h2_index) -> None:
    """The check above can fail: a client that does not offer h2 is served (and recorded) as HTTP/1.1."""
    front, cert = h2_index
    ctx = ssl.create_default_context(cafile=str(cert))
    with urllib.request.urlopen(front.url + "alpha/", context=ctx, timeout=30) as r:
        assert r.status == 200 and b"alpha" in r.read()
    assert [proto for proto, _, _ in front.requests] == ["http/1.1"]
