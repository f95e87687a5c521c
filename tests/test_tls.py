"""pypm.tls: the HTTP clients' TLS context, made ahead on a thread of its own."""

from __future__ import annotations

import ssl
import threading
import time

import pytest

from pypm import tls
from tests.test_http import _localhost_cert


def test_the_context_trusts_ssl_cert_file_and_verifies(tmp_path, monkeypatch) -> None:
    cert, _ = _localhost_cert(tmp_path)
    monkeypatch.setenv("SSL_CERT_FILE", str(cert))
    ctx = tls.context()
    assert isinstance(ctx, ssl.SSLContext)
    assert ctx.verify_mode == ssl.CERT_REQUIRED and ctx.check_hostname
    assert [c["subject"] for c in ctx.get_ca_certs()] == [((("commonName", "localhost"),),)]
    assert tls.context() is ctx  # one per environment, shared by every client of the process


def test_another_environment_gets_another_context(tmp_path, monkeypatch) -> None:
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    a, _ = _localhost_cert(tmp_path / "a")
    b, _ = _localhost_cert(tmp_path / "b")
    monkeypatch.delenv("PYPM_HTTP2", raising=False)
    monkeypatch.setenv("SSL_CERT_FILE", str(a))
    first = tls.context()
    monkeypatch.setenv("SSL_CERT_FILE", str(b))
    assert tls.context() is not first
    monkeypatch.setenv("SSL_CERT_FILE", str(a))
    monkeypatch.setenv("PYPM_HTTP2", "1")  # httpcore sets ALPN on the context: not shared across modes
    assert tls.context() is not first
    monkeypatch.delenv("PYPM_HTTP2")
    assert tls.context() is first


def test_an_unreadable_ca_file_is_raised_where_the_context_is_asked_for(tmp_path, monkeypatch) -> None:
    from pypm.errors import UsageError

    monkeypatch.setenv("SSL_CERT_FILE", str(tmp_path / "missing.pem"))
    tls.start()  # does not raise: the error belongs to whoever makes a request
    for _ in range(2):
        with pytest.raises(UsageError) as ei:
            tls.context()
        assert f"SSL_CERT_FILE={tmp_path / 'missing.pem'}" in str(ei.value) and "No such file" in str(ei.value)
        assert "unset it" in (ei.value.hint or "")
    (tmp_path / "junk.pem").write_text("not a certificate\n")
    monkeypatch.setenv("SSL_CERT_FILE", str(tmp_path / "junk.pem"))
    with pytest.raises(UsageError, match="junk.pem"):
        tls.context()


def test_a_bad_ssl_cert_file_is_a_clear_error_from_lock_not_a_traceback(tmp_path, monkeypatch) -> None:
    import subprocess
    import sys

    (tmp_path / "pyproject.toml").write_text('[project]\nname = "p"\nversion = "1"\ndependencies = ["x"]\n'
                                             '[tool.pypm]\nindex-url = "https://127.0.0.1:9/simple"\n')
    env = {**__import__("os").environ, "SSL_CERT_FILE": str(tmp_path / "missing.pem"),
           "PYPM_CACHE_DIR": str(tmp_path / "cache")}
    r = subprocess.run([sys.executable, "-m", "pypm", "lock"], cwd=tmp_path, env=env, capture_output=True, text=True)
    assert r.returncode != 0
    assert "SSL_CERT_FILE=" in r.stderr and "missing.pem" in r.stderr and "Traceback" not in r.stderr, r.stderr
    assert "internal error" not in r.stderr, r.stderr


def test_start_returns_at_once_and_the_context_is_made_on_its_own_thread(tmp_path, monkeypatch) -> None:
    cert, _ = _localhost_cert(tmp_path)
    monkeypatch.setenv("SSL_CERT_FILE", str(cert))
    made_on: list[str] = []
    real = tls._make

    def slow(cafile: str, capath: str, native: str = ""):
        time.sleep(0.3)
        made_on.append(threading.current_thread().name)
        return real(cafile, capath, native)

    monkeypatch.setattr(tls, "_make", slow)
    t = time.monotonic()
    tls.start()
    assert time.monotonic() - t < 0.1  # the caller goes on with its own work meanwhile
    ctx = tls.context()
    assert made_on == ["pypm-tls"] and [c["subject"] for c in ctx.get_ca_certs()] == [((("commonName", "localhost"),),)]


def test_a_process_that_exits_while_the_context_is_made_exits_cleanly() -> None:
    # A command may end before the context is made (a sync that only removed packages). With the
    # thread a daemon, exit() ran OpenSSL's clean-up under it and the process died of SIGSEGV
    # (1 such sync in 5 here; this script, which has OpenSSL loaded as pypm has and exits while
    # the CAs load, 23 runs in 30).
    import subprocess
    import sys

    codes = [subprocess.run([sys.executable, "-c", "import hashlib, ssl, time; from pypm import tls; tls.start(); time.sleep(0.003)"],
                            stderr=subprocess.DEVNULL).returncode
             for _ in range(30)]
    assert codes == [0] * 30


def test_native_tls_trusts_the_system_store_and_ssl_cert_file_still_wins(tmp_path, monkeypatch) -> None:
    import certifi

    from pypm.errors import UsageError

    monkeypatch.delenv("SSL_CERT_FILE", raising=False)
    monkeypatch.delenv("SSL_CERT_DIR", raising=False)
    system = ssl.create_default_context().get_ca_certs()
    bundled = ssl.create_default_context(cafile=certifi.where()).get_ca_certs()
    monkeypatch.setenv("PYPM_NATIVE_TLS", "1")
    assert tls.context().get_ca_certs() == system
    monkeypatch.setenv("PYPM_NATIVE_TLS", "0")
    assert tls.context().get_ca_certs() == bundled
    monkeypatch.setenv("PYPM_NATIVE_TLS", "maybe")
    with pytest.raises(UsageError, match="PYPM_NATIVE_TLS='maybe' is neither yes nor no"):
        tls.context()
    cert, _ = _localhost_cert(tmp_path)
    monkeypatch.setenv("SSL_CERT_FILE", str(cert))
    monkeypatch.setenv("PYPM_NATIVE_TLS", "1")
    assert [c["subject"] for c in tls.context().get_ca_certs()] == [((("commonName", "localhost"),),)]
