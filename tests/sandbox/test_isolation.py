"""Isolation seen from inside a sandboxed command, as real root and as uid 65534 (issue 4's probes)."""

from __future__ import annotations

import os
import socket
import subprocess

import pytest

from .conftest import NOBODY, as_user, probe

EPERM = "EPERM"


@pytest.fixture(scope="module", params=["root-native", "nobody-native", "root-python", "nobody-python"])
def result(request, boxes):
    """probe.py's findings for one user and runner (the compiled helper, the Python runner),
    probed once for the whole module."""
    box = boxes[request.param]
    project = box.world.user_dir(box.user, "project")
    with socket.socket() as listener:  # a TCP listener on the host's 127.0.0.1
        listener.bind(("127.0.0.1", 0))
        listener.listen(8)
        out = probe(box, project, listener.getsockname()[1])
    out["_box"], out["_project"] = box, project
    return out


def test_the_probe_runs_as_the_caller(result) -> None:
    box = result["_box"]
    want = 0 if box.user == "root" else NOBODY
    assert result["uid"] == want and result["euid"] == want


def test_files_outside_the_binds_are_invisible_and_the_home_is_not_the_real_one(result) -> None:
    assert result["read_secret"] == "ENOENT"
    # $HOME inside is a tmpfs: writing there works but never reaches the caller's real home.
    assert result["write_home"] == "ok"
    assert os.listdir(result["_box"].home) == []


def test_read_only_binds_refuse_writes_and_remounts(result) -> None:
    assert result["write_ro"] == "EROFS"
    assert result["remount_ro_rw"] == EPERM
    assert not (result["_project"] / "ro" / "pwned-by-sandbox").exists()
    # ... while the project itself is writable, and the write lands on the host.
    assert result["write_rw"] == "ok"
    assert (result["_project"] / "written-inside").exists()


def test_only_its_own_processes(result) -> None:
    assert result["pid"] == 2  # PID 1 is the sandbox's init
    assert result["pids"] == [1, 2]
    assert result["kill_host_pid"] == "ESRCH"
    assert result["ptrace_pid1"] == EPERM


def test_no_network_but_loopback(result) -> None:
    assert result["connect_host"] == "ECONNREFUSED"  # the host's listener is not on this 127.0.0.1
    assert result["interfaces"] == ["lo"]


@pytest.mark.parametrize("name", ["mount_tmpfs", "unshare_user", "unshare_net", "clone_newuser", "clone_newns",
                                  "setns", "keyctl", "bpf", "perf_event_open", "userfaultfd", "open_by_handle_at",
                                  "tiocsti", "tiocsti_high_bits", "ptrace_pid1", "sethostname"])
def test_dangerous_syscalls_fail_with_eperm(result, name) -> None:
    assert result[name] == EPERM, (name, result[name])


def test_clone3_is_enosys_so_libc_falls_back_to_the_filtered_clone(result) -> None:
    assert result["clone3"] == "ENOSYS"
    assert result["tiocgwinsz"] == "ok"  # other ioctls still work


def test_kernel_settings_are_read_only(result) -> None:
    assert result["write_proc_sys"] in ("EROFS", "EACCES")
    assert result["write_proc_sysrq"] in ("EROFS", "EACCES", "ENOENT")
    assert result["write_sys"] in ("EROFS", "EACCES", "ENOENT")


def test_hostname_changes_stay_inside(result) -> None:
    assert result["hostname"] == "pypm-sandbox"
    assert socket.gethostname() != "evil"


def test_no_capability_no_new_privileges_seccomp_on(result) -> None:
    assert set(result["caps"].values()) == {"0000000000000000"}, result["caps"]
    assert result["no_new_privs"] == "1"
    assert result["seccomp"] == "2"


def test_a_setuid_binary_gains_nothing(result, world) -> None:
    if world.suid is None:
        pytest.skip("no gcc on this machine to build the setuid probe")
    box = result["_box"]
    want_uid = 0 if box.user == "root" else NOBODY
    assert result["setuid_bin"] == f"euid={want_uid} capeff=0000000000000000"
    if box.user == "nobody":
        # The same binary outside the sandbox does make uid 65534 root: the probe can fail.
        r = subprocess.run(as_user("nobody", [str(world.suid)], {"PATH": "/usr/bin:/bin"}),
                           capture_output=True, text=True)
        assert r.stdout.startswith("euid=0 "), r.stdout


def test_no_setuid_or_setgid_file_can_be_made_in_a_writable_bind(result) -> None:
    assert result["chmod_setuid"] == EPERM
    assert result["chmod_setgid"] == EPERM
    assert result["creat_setuid"] == EPERM
    assert result["chmod_plain"] == "ok"
    for f in result["_project"].iterdir():
        assert not f.stat().st_mode & 0o6000, f


def test_only_fds_0_1_2_reach_the_command(result) -> None:
    assert result["extra_fds"] == []
    assert result["proc_self_fd"] in ([0, 1, 2], [0, 1, 2, 3])  # 3: the directory listdir itself opened


_KEYRING = """
import ctypes, os, sys
libc = ctypes.CDLL(None, use_errno=True)
NR_KEYCTL, NR_UNSHARE = (250, 272) if os.uname().machine == "x86_64" else (219, 97)
ring = libc.syscall(ctypes.c_long(NR_KEYCTL), ctypes.c_long(0), ctypes.c_long(-3), ctypes.c_long(0))
ret = libc.syscall(ctypes.c_long(NR_UNSHARE), ctypes.c_long(0x10000000))
print(ring, ret, ctypes.get_errno())
"""


def test_fresh_session_keyring_and_no_nested_user_namespace_even_without_seccomp(box, world) -> None:
    """With a profile that allows everything, the other layers still hold: the session keyring
    is a new one (not the caller's), and user.max_user_namespaces=0 stops nested namespaces."""
    import ctypes

    libc = ctypes.CDLL(None, use_errno=True)
    nr = 250 if os.uname().machine == "x86_64" else 219
    # The caller's session keyring, created if it has none (as the sandboxed side would see it).
    host_ring = libc.syscall(ctypes.c_long(nr), ctypes.c_long(0), ctypes.c_long(-3), ctypes.c_long(1))
    assert host_ring > 0
    allow_all = world.base / "allow-all.json"
    if not allow_all.exists():
        allow_all.write_text('{"defaultAction": "SCMP_ACT_ALLOW"}')
        allow_all.chmod(0o644)
    project = world.user_dir(box.user, "project")
    r = box.run(["--project", str(project), "--profile", str(allow_all)], ["/usr/bin/python3", "-c", _KEYRING])
    assert r.returncode == 0, r.stderr
    ring, ret, err = map(int, r.stdout.split())
    assert ring > 0 and ring != host_ring
    assert ret == -1 and err == 28  # ENOSPC: the namespace limit, not seccomp
