import os
import socket

import pytest

from my_lib.demo import stack


def test_stack_reports_requests():
    s = stack()
    assert s["requests"] == "2.32.3"
    assert s["python"].count(".") == 2


def test_network_probe():
    """Connects to PYPM_CANARY_PROBE (host:port) when the runner sets it.

    Inside pypm's default sandbox there is no network, so the runner expects this to fail
    there and pass under `--network host`.
    """
    target = os.environ.get("PYPM_CANARY_PROBE")
    if not target:
        pytest.skip("PYPM_CANARY_PROBE is not set: no network probe requested")
    host, port = target.rsplit(":", 1)
    with socket.create_connection((host, int(port)), timeout=3) as s:
        s.sendall(b"ping")
