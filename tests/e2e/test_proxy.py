"""pypm behind an HTTP proxy from the environment (HTTP_PROXY / HTTPS_PROXY / NO_PROXY), as pip and
uv are: a real forwarding proxy on 127.0.0.1 (absolute-form GETs and CONNECT tunnels), a real index."""

from __future__ import annotations

import select
import socket
import threading
from pathlib import Path

import pytest

from tests.e2e.test_http2 import H2Front, make_cert
from tests.e2e.test_lock import write_project

PROXY_VARS = ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "NO_PROXY",
              "http_proxy", "https_proxy", "all_proxy", "no_proxy")


class ForwardProxy:
    """A forward proxy: `GET http://host:port/path` is fetched for the client (one request per
    connection, `Connection: close`), `CONNECT host:port` becomes a byte tunnel. `seen` records
    each request line."""

    def __init__(self) -> None:
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.seen: list[str] = []
        self._lock = threading.Lock()
        threading.Thread(target=self._accept, daemon=True).start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def close(self) -> None:
        self.sock.close()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, conn: socket.socket) -> None:
        with conn:
            f = conn.makefile("rb")
            line = f.readline().decode("latin-1").strip()
            headers = []
            while (h := f.readline()) not in (b"\r\n", b"\n", b""):
                headers.append(h.decode("latin-1"))
            with self._lock:
                self.seen.append(line)
            method, target, _ = line.split(" ", 2)
            if method == "CONNECT":
                host, port = target.rsplit(":", 1)
                with socket.create_connection((host, int(port))) as up:
                    conn.sendall(b"HTTP/1.1 200 Connection established\r\n\r\n")
                    self._tunnel(conn, up)
                return
            assert target.startswith("http://"), line
            hostport, _, path = target[len("http://"):].partition("/")
            host, port = hostport.rsplit(":", 1)
            kept = "".join(h for h in headers if not h.lower().startswith(("connection:", "proxy-", "keep-alive")))
            with socket.create_connection((host, int(port))) as up:
                up.sendall(f"{method} /{path} HTTP/1.1\r\n{kept}Connection: close\r\n\r\n".encode("latin-1"))
                while chunk := up.recv(1 << 16):
                    conn.sendall(chunk)

    @staticmethod
    def _tunnel(a: socket.socket, b: socket.socket) -> None:
        while True:
            ready, _, _ = select.select([a, b], [], [], 30)
            if not ready:
                return
            for s in ready:
                data = s.recv(1 << 16)
                if not data:
                    return
                (b if s is a else a).sendall(data)


@pytest.fixture
def proxy():
    p = ForwardProxy()
    yield p
    p.close()


def _env(**set_: str | None) -> dict[str, str | None]:
    env: dict[str, str | None] = {k: None for k in PROXY_VARS}  # nothing from the host's environment
    env.update(set_)
    return env


def test_lock_and_sync_go_through_the_proxy_in_http_proxy(pypm, dists, index_server, tmp_path: Path, proxy) -> None:
    dists.wheel("alpha", "1.0", requires_dist=["beta"])
    dists.wheel("beta", "2.0")
    idx = index_server()
    proj = write_project(tmp_path / "proj", ["alpha"], build=False)
    env = _env(HTTP_PROXY=proxy.url)

    pypm("lock", "--index-url", idx.url, cwd=proj, env=env, check=True)
    pages = [s for s in proxy.seen if "/simple/" in s]
    assert any(f"127.0.0.1:{idx.port}/simple/alpha/" in s for s in pages), proxy.seen
    assert any("/simple/beta/" in s for s in pages), proxy.seen

    before = len(proxy.seen)
    pypm("sync", cwd=proj, env=env, check=True)  # the downloads too (a process of their own)
    assert any(s.startswith("GET http://") and "beta-2.0-py3-none-any.whl" in s
               for s in proxy.seen[before:]), proxy.seen[before:]
    assert (proj / ".venv").is_dir()


def test_an_https_index_is_reached_through_a_connect_tunnel(pypm, dists, index_server, tmp_path: Path,
                                                            proxy) -> None:
    cert, key = make_cert(tmp_path)
    dists.wheel("alpha", "1.0")
    front = H2Front(index_server().base, cert, key)
    try:
        proj = write_project(tmp_path / "proj", ["alpha"], build=False)
        r = pypm("lock", "--index-url", front.url, cwd=proj, check=True,
                 env=_env(HTTPS_PROXY=proxy.url, SSL_CERT_FILE=str(cert)))
        assert r.returncode == 0
        assert f"CONNECT 127.0.0.1:{front.port} HTTP/1.1" in proxy.seen, proxy.seen
        assert front.requests, "the index answered nothing"
    finally:
        front.close()


def test_http2_goes_through_the_tunnel_too(pypm, dists, index_server, tmp_path: Path, proxy) -> None:
    """PYPM_HTTP2=1 behind a proxy: HTTP/2 inside the CONNECT tunnel, as without one (it spoke
    HTTP/1.1 there: the proxy's transport was made without HTTP/2)."""
    pytest.importorskip("h2", reason="the h2 package (HTTP/2 for httpx) is not installed")
    cert, key = make_cert(tmp_path)
    dists.wheel("alpha", "1.0")
    front = H2Front(index_server(relative_urls=True).base, cert, key)
    try:
        proj = write_project(tmp_path / "proj", ["alpha"], build=False)
        env = _env(HTTPS_PROXY=proxy.url, SSL_CERT_FILE=str(cert), PYPM_HTTP2="1")
        pypm("lock", "--index-url", front.url, cwd=proj, check=True, env=env)
        pypm("sync", cwd=proj, check=True, env=env)
        assert f"CONNECT 127.0.0.1:{front.port} HTTP/1.1" in proxy.seen, proxy.seen
        assert front.requests and {proto for proto, _, _ in front.requests} == {"h2"}, front.requests
        assert any(p.endswith("alpha-1.0-py3-none-any.whl") for _, _, p in front.requests)
    finally:
        front.close()


def test_no_proxy_names_the_hosts_reached_directly(pypm, dists, index_server, tmp_path: Path, proxy) -> None:
    dists.wheel("alpha", "1.0")
    idx = index_server()
    proj = write_project(tmp_path / "proj", ["alpha"], build=False)
    pypm("lock", "--index-url", idx.url, cwd=proj, check=True,
         env=_env(HTTP_PROXY=proxy.url, NO_PROXY="example.invalid,[::1], 127.0.0.0/8"))  # httpx raised on [::1]
    assert proxy.seen == []


def test_an_unreachable_proxy_is_an_error_that_names_it(pypm, dists, index_server, tmp_path: Path) -> None:
    dists.wheel("alpha", "1.0")
    idx = index_server()
    proj = write_project(tmp_path / "proj", ["alpha"], build=False)
    closed = socket.create_server(("127.0.0.1", 0))
    port = closed.getsockname()[1]
    closed.close()  # nothing listens there now
    r = pypm("lock", "--index-url", idx.url, cwd=proj, env=_env(http_proxy=f"http://user:secret@127.0.0.1:{port}"))
    assert r.returncode != 0
    assert "Traceback" not in r.stderr
    assert "cannot fetch" in r.stderr and "proxy" in r.stderr, r.stderr
    assert "secret" not in r.stderr
    assert not (proj / "pypm.lock").exists()


def test_an_untrusted_certificate_fails_at_once_with_the_fix(pypm, dists, index_server, tmp_path: Path) -> None:
    """Not retried: the answer is the same each time (four attempts with back-off took ~8 s before)."""
    cert, key = make_cert(tmp_path)
    dists.wheel("alpha", "1.0")
    front = H2Front(index_server().base, cert, key)  # its certificate is not in SSL_CERT_FILE's bundle
    try:
        proj = write_project(tmp_path / "proj", ["alpha"], build=False)
        r = pypm("lock", "--index-url", front.url, cwd=proj, env=_env(SSL_CERT_FILE=None, SSL_CERT_DIR=None))
        assert r.returncode != 0 and "Traceback" not in r.stderr
        assert "TLS certificate is not trusted" in r.stderr and "SSL_CERT_FILE" in r.stderr, r.stderr
        assert front._conns <= 3, f"{front._conns} connections: the failure was retried"
    finally:
        front.close()


@pytest.mark.parametrize(("host", "port", "bypassed"), [
    ("10.1.2.3", 443, True), ("11.0.0.1", 443, False),            # a CIDR range
    ("a.corp.example", 443, True), ("corp.example", 443, True),   # a domain and its subdomains
    ("notcorp.example", 443, False),
    ("localhost", 8080, True), ("localhost", 80, False),          # with a port
    ("::1", 443, True), ("::2", 80, True),                        # IPv6, in brackets or not
    ("y.x.example", 443, True), ("files.example", 443, False),
])
def test_no_proxy_as_curl_reads_it(host: str, port: int, bypassed: bool) -> None:
    from pypm.http import NoProxy

    rules = NoProxy("10.0.0.0/8,.corp.example,localhost:8080,[::1],::2,*.x.example, bad:port")
    assert rules.matches(host, port) is bypassed
    assert NoProxy(" * ").everything and not rules.everything
