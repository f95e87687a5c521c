"""Download progress: rich bars on a terminal (a real pty), nothing in a pipe (CI) or with -q."""

from __future__ import annotations

import os
import pty
import select
import subprocess
import sys

import pytest

from tests.e2e.test_sync import assert_venv_exact, write_project

BAR_CHARS = ("━", "╸", "╺")  # what rich's BarColumn draws


def _run_on_pty(pypm, args, cwd) -> tuple[int, str]:
    """Run pypm with stderr on a pseudo-terminal (stdout piped); returns (exit code, terminal text)."""
    master, slave = pty.openpty()
    env = pypm.env
    env.update(TERM="xterm-256color", COLUMNS="120")
    for k in ("CI", "NO_COLOR", "TERM_PROGRAM"):
        env.pop(k, None)
    proc = subprocess.Popen([sys.executable, "-m", "pypm", *args], cwd=cwd, env=env, stdin=subprocess.DEVNULL,
                            stdout=subprocess.PIPE, stderr=slave)
    os.close(slave)
    chunks = []
    while True:
        ready, _, _ = select.select([master], [], [], 120)
        if not ready:
            proc.kill()
            raise AssertionError("no output from pypm on the pty for 120 s")
        try:
            data = os.read(master, 65536)
        except OSError:  # EIO: the child closed the terminal
            break
        if not data:
            break
        chunks.append(data)
    os.close(master)
    assert proc.stdout is not None
    proc.stdout.read()
    return proc.wait(timeout=60), b"".join(chunks).decode("utf-8", "replace")


@pytest.fixture
def project(pypm, dists, index_server, tmp_path):
    # 3 MiB of random bytes: a "large" file that gets its own bar, and downloads take some chunks
    dists.wheel("bigpkg", "1.0", modules={"bigpkg/__init__.py": "", "bigpkg/blob.bin": os.urandom(3 << 20)})
    dists.wheel("smallpkg", "1.0")
    server = index_server()
    root = write_project(tmp_path / "proj", deps=["bigpkg", "smallpkg"])
    assert pypm("lock", "--index-url", server.url, cwd=root).returncode == 0
    return root


def test_bars_are_drawn_on_a_terminal(pypm, project) -> None:
    root = project
    code, text = _run_on_pty(pypm, ["sync", "--locked"], root)
    assert code == 0, text
    assert any(c in text for c in BAR_CHARS), text
    assert "bigpkg-1.0-py3-none-any.whl" in text and "2 file(s)" in text, text  # per-file and overall bars
    assert_venv_exact(root / ".venv", {"bigpkg": "1.0", "smallpkg": "1.0"})


def test_no_bars_in_a_pipe(pypm, project) -> None:
    root = project
    r = pypm("sync", "--locked", cwd=root)
    assert r.returncode == 0, r.stderr
    assert not any(c in r.stderr + r.stdout for c in BAR_CHARS), r.stderr
    assert "\x1b[" not in r.stderr, r.stderr  # no cursor movement or colour codes in a CI log


def test_quiet_draws_no_bars_even_on_a_terminal(pypm, project) -> None:
    root = project
    code, text = _run_on_pty(pypm, ["-q", "sync", "--locked"], root)
    assert code == 0, text
    assert not any(c in text for c in BAR_CHARS), text
    assert text.strip() == "", text
