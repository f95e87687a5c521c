"""pypm.http's client shared by a thread pool, against a real HTTP/2 front (TLS + ALPN) on 127.0.0.1."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor

import pytest

from tests.e2e.test_http2 import H2Front, make_cert

pytest.importorskip("h2", reason="the h2 package (HTTP/2 for httpx) is not installed")


def _localhost_cert(dest):
    """A self-signed certificate for the name localhost (cert.pem, key.pem)."""
    import datetime as dt

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = dt.datetime.now(dt.timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now - dt.timedelta(days=1))
            .not_valid_after(now + dt.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName([x509.DNSName("localhost")]), False)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), True)
            .sign(key, hashes.SHA256()))
    cert_path, key_path = dest / "localhost.pem", dest / "localhost-key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return cert_path, key_path


@pytest.fixture
def h2_front(dists, index_server, tmp_path, monkeypatch):
    cert, key = make_cert(tmp_path)
    dists.wheel("alpha", "1.0")
    front = H2Front(index_server().base, cert, key)
    monkeypatch.setenv("SSL_CERT_FILE", str(cert))
    monkeypatch.setenv("PYPM_HTTP2", "1")  # opt-in: the default is HTTP/1.1 (pypm.http.make_client)
    yield front
    front.close()


def test_threads_sharing_the_client_never_share_an_http2_connection(h2_front) -> None:
    # httpcore's HTTP/2 connection changes its h2 state and HPACK tables without a lock; shared
    # by pypm's fetch threads it failed now and then ("deque mutated during iteration" from
    # hpack, duplicate stream ids). Each thread must get a connection of its own.
    from pypm.http import make_client

    client = make_client()
    start = threading.Barrier(8)

    def fetch(t: int) -> list[int]:
        start.wait()  # all threads at once, so that a shared pool would interleave them
        return [client.get(f"{h2_front.url}alpha/?thread={t}&n={i}").status_code for i in range(6)]

    try:
        with ThreadPoolExecutor(8) as pool:
            statuses = [s for ss in pool.map(fetch, range(8)) for s in ss]
    finally:
        client.close()
    assert statuses == [200] * 48
    assert {proto for proto, _, _ in h2_front.requests} == {"h2"}, h2_front.requests
    threads_per_connection: dict[int, set[str]] = {}
    for _, conn, path in h2_front.requests:
        threads_per_connection.setdefault(conn, set()).add(path.split("thread=")[1].split("&")[0])
    assert all(len(t) == 1 for t in threads_per_connection.values()), threads_per_connection
    assert len(threads_per_connection) == 8


def test_one_thread_reuses_its_connection(h2_front) -> None:
    from pypm.http import make_client

    with make_client() as client:
        for i in range(3):
            assert client.get(f"{h2_front.url}alpha/?n={i}").status_code == 200
    assert [(proto, conn) for proto, conn, _ in h2_front.requests] == [("h2", 1)] * 3


def test_by_default_threads_share_one_http1_pool(h2_front, monkeypatch) -> None:
    # HTTP/1.1 unless PYPM_HTTP2 asks: a connection serves one request at a time, so the
    # threads share one pool, and a connection a thread has finished with serves the next one
    from pypm.http import make_client

    monkeypatch.delenv("PYPM_HTTP2")
    client = make_client()
    start = threading.Barrier(4)

    def fetch(t: int) -> list[int]:
        start.wait()
        return [client.get(f"{h2_front.url}alpha/?thread={t}&n={i}").status_code for i in range(6)]

    try:
        with ThreadPoolExecutor(4) as pool:
            statuses = [s for ss in pool.map(fetch, range(4)) for s in ss]
        for i in range(3):  # one thread after the burst: kept connections, no new one
            assert client.get(f"{h2_front.url}alpha/?after={i}").status_code == 200
    finally:
        client.close()
    assert statuses == [200] * 24
    assert {proto for proto, _, _ in h2_front.requests} == {"http/1.1"}, h2_front.requests
    connections = {conn for _, conn, _ in h2_front.requests}
    assert len(connections) <= 4, h2_front.requests
    burst = {conn for _, conn, path in h2_front.requests if "thread=" in path}
    assert {conn for _, conn, path in h2_front.requests if "after=" in path} <= burst


@pytest.mark.parametrize("http2", ["1", "0"])
def test_threads_look_a_host_up_once(dists, index_server, tmp_path, monkeypatch, http2) -> None:
    # A burst of requests from 6 threads opens 6 connections (HTTP/2: a pool per thread;
    # HTTP/1.1: one busy connection per request); the host's address is looked up once for all
    # of them (a burst of lookups is what a resolver that drops some answers with a 5 s stall).
    import socket

    from pypm.http import make_client

    cert, key = _localhost_cert(tmp_path)
    dists.wheel("alpha", "1.0")
    front = H2Front(index_server().base, cert, key)
    monkeypatch.setenv("SSL_CERT_FILE", str(cert))
    monkeypatch.setenv("PYPM_HTTP2", http2)
    lookups: list[str] = []
    real = socket.getaddrinfo

    def counting(host, *args, **kw):
        lookups.append(host)
        return real(host, *args, **kw)

    monkeypatch.setattr(socket, "getaddrinfo", counting)
    client = make_client()
    start = threading.Barrier(6)

    def fetch(t: int) -> int:
        start.wait()
        return client.get(f"https://localhost:{front.port}/simple/alpha/?thread={t}").status_code

    try:
        with ThreadPoolExecutor(6) as pool:
            assert list(pool.map(fetch, range(6))) == [200] * 6
    finally:
        client.close()
        front.close()
    assert lookups.count("localhost") == 1, lookups
    assert len({conn for _, conn, _ in front.requests}) == 6  # still a connection per request
    assert {proto for proto, _, _ in front.requests} == {"h2" if http2 == "1" else "http/1.1"}


def test_httpx_is_imported_without_its_command_line_client_or_async_libraries() -> None:
    """httpx imports its CLI (click, rich.console, pygments: 30-50 ms) whenever click is
    installed, and httpcore anyio (and tries trio) for async locks; pypm.http keeps them out, and
    httpx still works (and each stays importable afterwards)."""
    import importlib.util
    import subprocess
    import sys

    missing = [m for m in ("click", "anyio") if importlib.util.find_spec(m) is None]
    if missing:
        pytest.skip(f"{', '.join(missing)} not installed here, so httpx/httpcore would not import them anyway")
    code = ("import sys, pypm.http, httpx\n"
            "print(sorted(m for m in ('click', 'pygments', 'rich.console', 'httpx._main', 'anyio', 'trio')"
            " if m in sys.modules))\n"
            "print(callable(httpx.Client), callable(httpx.main))\n"
            "import httpx._main, anyio\nprint('importable')")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0 and r.stdout == "[]\nTrue True\nimportable\n", (r.stdout, r.stderr)
    plain = subprocess.run([sys.executable, "-c", "import sys, httpcore, httpx; "
                            "print('click' in sys.modules, 'anyio' in sys.modules)"],
                           capture_output=True, text=True, timeout=60)
    assert plain.stdout == "True True\n"  # what the test guards against: the two alone import both


def test_no_module_but_pypm_http_imports_httpx_at_run_time() -> None:
    """The hiding above holds only if httpx is first imported through pypm.http: any other
    module's `import httpx` (outside `if TYPE_CHECKING:`) could run first and bring the CLI in."""
    import ast
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    offenders = []
    for path in sorted([*(root / "pypm").rglob("*.py"), *(root / "sandbox").rglob("*.py")]):
        if path == root / "pypm" / "http.py":
            continue
        tree = ast.parse(path.read_text(encoding="utf-8"))
        typing_only: set[int] = set()
        for node in ast.walk(tree):
            if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
                typing_only.update(id(n) for stmt in node.body for n in ast.walk(stmt))
        for node in ast.walk(tree):
            if id(node) in typing_only or not isinstance(node, (ast.Import, ast.ImportFrom)):
                continue
            names = ([a.name for a in node.names] if isinstance(node, ast.Import)
                     else [node.module or ""] if node.level == 0 else [])
            if any(n == "httpx" or n.startswith(("httpx.", "httpcore")) for n in names):
                offenders.append(f"{path.relative_to(root)}:{node.lineno}")
    assert not offenders, f"import httpx through pypm.http: {offenders}"
