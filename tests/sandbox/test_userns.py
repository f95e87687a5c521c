"""Unavailable user namespaces: a clear error naming the knob, never an unsandboxed run."""

from __future__ import annotations

import errno
import subprocess

import pytest

from sandbox.userns import diagnose

from .conftest import SYSTEM_PYTHON, as_user

_FILTER = """
import os, sys, pyseccomp as sc
f = sc.SyscallFilter(sc.ALLOW)  # what a container runtime's default profile does to namespaces
f.add_rule(sc.ERRNO(1), "unshare")
f.add_rule(sc.ERRNO(1), "clone", sc.Arg(0, sc.MASKED_EQ, 0x10000000, 0x10000000))
f.load()
os.execv(sys.executable, [sys.executable, "-m", "sandbox", "--", "/bin/true"])
"""


def _files(**values: str):
    paths = {
        "max": "/proc/sys/user/max_user_namespaces",
        "debian": "/proc/sys/kernel/unprivileged_userns_clone",
        "apparmor": "/proc/sys/kernel/apparmor_restrict_unprivileged_userns",
        "status": "/proc/self/status",
    }
    files = {paths[k]: v for k, v in values.items()}
    return files.get


@pytest.mark.parametrize("files, err, words", [
    (dict(max="0"), errno.ENOSPC, ["user.max_user_namespaces = 0", "sysctl -w user.max_user_namespaces="]),
    (dict(max="15000", debian="0"), errno.EPERM, ["kernel.unprivileged_userns_clone = 0", "sysctl -w kernel.unprivileged_userns_clone=1"]),
    (dict(max="15000", apparmor="1"), errno.EACCES, ["kernel.apparmor_restrict_unprivileged_userns = 1",
                                                     "docs/sandbox.md", "apparmor_parser"]),
    (dict(max="15000", status="Name:\tpypm\nSeccomp:\t2\n"), errno.EPERM, ["seccomp", "seccomp=unconfined"]),
    (dict(max="3"), errno.ENOSPC, ["limit", "max_user_namespaces = 3"]),
])
def test_each_knob_is_named_with_its_fix(files, err, words) -> None:
    hint = diagnose(err, _files(**files))
    assert hint is not None
    for w in words:
        assert w in hint, (w, hint)
    assert "--no-sandbox" in hint or "sysctl" in hint


def test_a_zero_namespace_limit_stops_the_sandbox_with_the_knob_named(box, world) -> None:
    """Inside a sandbox user.max_user_namespaces is 0 (and the profile here allows unshare):
    a sandbox started in there must fail with exit 8 and name the knob."""
    allow_all = world.base / "allow-all.json"
    if not allow_all.exists():
        allow_all.write_text('{"defaultAction": "SCMP_ACT_ALLOW"}')
        allow_all.chmod(0o644)
    venv = str(world.base / "venv")
    r = box.run(["--profile", str(allow_all), "--ro-bind", venv, "--env", "PYPM_CACHE_DIR=/tmp/c"],
                [f"{venv}/bin/python", "-m", "sandbox", "--", "/bin/true"])
    assert r.returncode == 8, r.stderr
    assert ("clone(CLONE_NEWUSER" in r.stderr or "unshare(" in r.stderr) and "ENOSPC" in r.stderr
    assert "user.max_user_namespaces = 0" in r.stderr


def test_a_seccomp_filter_forbidding_namespaces_is_recognised(box, world) -> None:
    """pypm itself under a container-style seccomp filter that refuses unshare."""
    r = box.run([], [SYSTEM_PYTHON, "-c", "print('inner')"])  # the box works normally
    assert r.returncode == 0 and r.stdout == "inner\n"
    r = subprocess.run(as_user(box.user, [world.python, "-c", _FILTER], box.env), capture_output=True, text=True)
    assert r.returncode == 8, r.stderr
    assert "EPERM" in r.stderr and "seccomp filter that forbids creating namespaces" in r.stderr
    assert "Traceback" not in r.stderr
