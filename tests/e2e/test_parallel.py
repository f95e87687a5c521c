"""Many requests in flight at once: `pypm lock` fetches pages and metadata concurrently, `pypm sync`
downloads wheels concurrently. A slow front on 127.0.0.1 (every response held back 0.3 s) counts how
many requests it serves at the same moment; a one-at-a-time client would never exceed 1."""

from __future__ import annotations

import threading
import time
import urllib.error
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from tests.e2e.test_sync import assert_venv_exact, write_project

DELAY = 0.3
N = 12


class SlowFront:
    """Forwards GET/HEAD to `backend`, each after DELAY seconds; records the peak concurrency."""

    def __init__(self, backend: str) -> None:
        front = self
        self.backend = backend.rstrip("/")
        self.lock = threading.Lock()
        self.inflight = 0
        self.peak = 0
        self.paths: list[str] = []

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *a: object) -> None:
                pass

            def do_GET(self) -> None:
                front.handle(self, "GET")

            def do_HEAD(self) -> None:
                front.handle(self, "HEAD")

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}/simple/"

    def reset(self) -> None:
        with self.lock:
            self.peak, self.paths = 0, []

    def handle(self, h: BaseHTTPRequestHandler, method: str) -> None:
        with self.lock:
            self.inflight += 1
            self.peak = max(self.peak, self.inflight)
            self.paths.append(h.path)
        try:
            time.sleep(DELAY)
            keep = {k: v for k, v in h.headers.items() if k.lower() in ("accept", "range", "if-range",
                                                                          "if-none-match", "if-modified-since")}
            req = urllib.request.Request(self.backend + h.path, method=method, headers=keep)
            try:
                with urllib.request.urlopen(req, timeout=30) as r:
                    status, headers, body = r.status, r.getheaders(), r.read()
            except urllib.error.HTTPError as e:
                status, headers, body = e.code, list(e.headers.items()), e.read()
        finally:
            with self.lock:
                self.inflight -= 1
        h.send_response(status)
        for k, v in headers:
            if k.lower() in ("content-type", "etag", "last-modified", "content-range", "accept-ranges", "location"):
                h.send_header(k, v)
        h.send_header("Content-Length", str(len(body)))
        h.end_headers()
        if method == "GET":
            h.wfile.write(body)

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def slow(dists, index_server):
    names = [f"pkg{i:02d}" for i in range(N)]
    for n in names:
        dists.wheel(n, "1.0")
    backend = index_server(relative_urls=True)  # file links resolve against the front
    front = SlowFront(backend.base)
    yield front, names
    front.close()


def test_lock_fetches_concurrently(pypm, slow, tmp_path) -> None:
    front, names = slow
    root = write_project(tmp_path / "proj", deps=names)
    r = pypm("lock", "--index-url", front.url, cwd=root)
    assert r.returncode == 0, r.stderr
    pages = [p for p in front.paths if p.startswith("/simple/pkg")]
    assert len(pages) == N, front.paths
    assert front.peak >= 4, f"at most {front.peak} request(s) in flight: the index client works one at a time"


def test_sync_downloads_concurrently(pypm, slow, tmp_path) -> None:
    front, names = slow
    root = write_project(tmp_path / "proj", deps=names)
    assert pypm("lock", "--index-url", front.url, cwd=root).returncode == 0
    front.reset()
    r = pypm("sync", "--locked", cwd=root)
    assert r.returncode == 0, r.stderr
    wheels = [p for p in front.paths if p.endswith(".whl")]
    assert len(wheels) == N, front.paths
    assert front.peak >= 4, f"at most {front.peak} download(s) at once"
    assert_venv_exact(root / ".venv", {n: "1.0" for n in names})
