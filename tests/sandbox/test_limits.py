"""Resource limits (`--limit`, `[tool.pypm.sandbox.limits]`): set for the command, held against
it, and refused up front when they could not be held. Real sandboxes, as root and as uid 65534,
through the compiled helper and the Python runner."""

from __future__ import annotations

import json
import resource
import subprocess
import time

import pytest

from .conftest import SYSTEM_PYTHON, Box

READ = r"""
import json, resource as r, sys
out = {}
for name in ("RLIMIT_AS", "RLIMIT_CPU", "RLIMIT_NOFILE", "RLIMIT_FSIZE", "RLIMIT_NPROC"):
    out[name] = list(r.getrlimit(getattr(r, name)))
try:  # raising a hard limit needs CAP_SYS_RESOURCE in the initial user namespace
    r.setrlimit(r.RLIMIT_NOFILE, (4096, 4096))
    out["raise"] = "raised"
except (OSError, ValueError) as e:
    out["raise"] = type(e).__name__
try:
    block = bytearray(768 << 20)
    out["alloc"] = "allocated"
except MemoryError:
    out["alloc"] = "MemoryError"
files = []
try:
    for _ in range(200):
        files.append(open("/dev/null"))
    out["files"] = "all opened"
except OSError as e:
    out["files"] = e.errno
print(json.dumps(out))
"""


def test_limits_hold_for_the_command_and_cannot_be_raised(box: Box) -> None:
    r = box.run(["--limit", "memory=512M", "--limit", "open-files=64", "--limit", "file-size=1M",
                 "--limit", "cpu=120"], [SYSTEM_PYTHON, "-c", READ])
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    assert out["RLIMIT_AS"] == [512 << 20] * 2 and out["RLIMIT_NOFILE"] == [64, 64]
    assert out["RLIMIT_FSIZE"] == [1 << 20] * 2 and out["RLIMIT_CPU"] == [120, 120]
    assert out["RLIMIT_NPROC"] == list(resource.getrlimit(resource.RLIMIT_NPROC))  # not asked for: the caller's
    assert out["raise"] == "ValueError"  # Python's word for EPERM here ("not allowed to raise maximum limit")
    assert out["alloc"] == "MemoryError" and out["files"] == 24  # EMFILE


def test_without_limits_the_command_has_the_callers(box: Box) -> None:
    r = box.run([], [SYSTEM_PYTHON, "-c", READ])
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    for name in ("RLIMIT_AS", "RLIMIT_NOFILE", "RLIMIT_FSIZE", "RLIMIT_CPU"):
        assert out[name] == list(resource.getrlimit(getattr(resource, name))), name
    assert out["alloc"] == "allocated" and out["files"] == "all opened"


def test_the_cpu_limit_kills_a_busy_command(box: Box) -> None:
    started = time.monotonic()
    r = box.run(["--limit", "cpu=1"], [SYSTEM_PYTHON, "-c", "while True: pass"], timeout=60)
    assert r.returncode == 128 + 9, (r.returncode, r.stderr)  # soft = hard: SIGKILL at the limit
    assert time.monotonic() - started < 30


def test_the_file_size_limit_stops_a_writer(box: Box) -> None:
    script = "head -c 3000000 /dev/zero > /tmp/big; echo $?; wc -c < /tmp/big"
    r = box.run(["--limit", "file-size=1M"], ["/bin/sh", "-c", script])
    assert r.returncode == 0, r.stderr
    assert r.stdout.split() == [str(128 + 25), str(1 << 20)]  # SIGXFSZ, at exactly the limit


FORK = r"""
import os, sys, time
made = 0
try:
    for _ in range(int(sys.argv[1])):
        if os.fork() == 0:
            time.sleep(30)
            os._exit(0)
        made += 1
except OSError as e:
    print(made, e.errno)
else:
    print(made, 0)
"""


def test_the_process_limit_bounds_the_whole_sandbox(box: Box) -> None:
    r = box.run(["--limit", "processes=12"], [SYSTEM_PYTHON, "-c", FORK, "100"], timeout=90)
    if box.user == "root":
        # The kernel does not apply RLIMIT_NPROC to uid 0: refused, not silently unenforced.
        assert r.returncode == 8 and "cannot be enforced when pypm runs as root" in r.stderr, r.stderr
        assert r.stdout == ""
        return
    assert r.returncode == 0, r.stderr
    made, err = map(int, r.stdout.split())
    # 12 tasks of this user in the sandbox's own user namespace: its init, the command, 10 more.
    assert (made, err) == (10, 11), r.stdout  # EAGAIN
    # Counted per sandbox, not per user: a second sandbox of the same user has its own 12
    # while the first one's processes still run.
    first = box.popen(["--limit", "processes=12"], [SYSTEM_PYTHON, "-c", FORK + "\ntime.sleep(30)", "5"])
    try:
        time.sleep(1.0)
        r = box.run(["--limit", "processes=12"], [SYSTEM_PYTHON, "-c", FORK, "100"], timeout=90)
        assert r.returncode == 0 and r.stdout.split() == ["10", "11"], (r.stdout, r.stderr)
    finally:
        first.kill()
        first.communicate()


def test_a_limit_above_the_callers_hard_limit_is_refused_before_anything_runs(box: Box) -> None:
    def lower() -> None:
        resource.setrlimit(resource.RLIMIT_NOFILE, (100, 100))

    r = subprocess.run(box.argv(["--limit", "open-files=200"], ["/bin/echo", "ran"]), capture_output=True,
                       text=True, timeout=60, preexec_fn=lower)
    assert r.returncode == 8 and r.stdout == "", (r.stdout, r.stderr)
    assert "open-files=200 is above this process's own hard limit (100)" in r.stderr and "hint:" in r.stderr
    r = subprocess.run(box.argv(["--limit", "open-files=100"], ["/bin/sh", "-c", "ulimit -n"]), capture_output=True,
                       text=True, timeout=60, preexec_fn=lower)
    assert (r.returncode, r.stdout) == (0, "100\n"), r.stderr


@pytest.mark.parametrize("flag, words", [
    ("memory=lots", "is not a size"), ("ram=1G", "unknown limit 'ram'"), ("cpu", "not NAME=VALUE"),
])
def test_malformed_limit_flags_are_clear_errors(boxes, flag: str, words: str) -> None:
    r = boxes["nobody"].run(["--limit", flag], ["/bin/echo", "ran"])
    assert r.returncode == 8 and words in r.stderr and "Traceback" not in r.stderr, r.stderr
    assert r.stdout == ""


def test_unlimited_drops_an_earlier_limit(boxes) -> None:
    r = boxes["nobody"].run(["--limit", "open-files=64", "--limit", "open-files=unlimited"], ["/bin/sh", "-c", "ulimit -n"])
    assert r.returncode == 0 and r.stdout == f"{resource.getrlimit(resource.RLIMIT_NOFILE)[0]}\n", r.stderr



FILL = r"""
import json, os, sys
out = {}
for d in sys.argv[1:]:
    path, written = os.path.join(d, "fill"), 0
    try:
        with open(path, "wb") as f:
            for _ in range(32):
                f.write(b"x" * (1 << 20))
                f.flush()
                written += 1 << 20
        out[d] = "all written"
    except OSError as e:
        out[d] = [e.errno, os.path.getsize(path)]
    os.unlink(path)
print(json.dumps(out))
"""


def test_tmp_size_caps_each_writable_tmpfs(box: Box) -> None:
    # Their pages are RAM: without a size each could take half of it.
    dirs = ["/tmp", str(box.home), "/dev/shm", "/dev"]
    r = box.run(["--limit", "tmp-size=8M"], [SYSTEM_PYTHON, "-c", FILL, *dirs])
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout) == {d: [28, 8 << 20] for d in dirs}  # ENOSPC at exactly 8 MiB
    r = box.run([], [SYSTEM_PYTHON, "-c", FILL, "/tmp"])
    assert r.returncode == 0 and json.loads(r.stdout) == {"/tmp": "all written"}, r.stderr
