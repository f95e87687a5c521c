"""sandbox.rootfs and syscalls, in a throwaway user + mount namespace (no full sandbox)."""

from __future__ import annotations

import json
import os

import pytest

from sandbox import rootfs, syscalls as sc


def _in_namespace(fn) -> dict:
    """Run fn() in a forked child inside new user+mount namespaces; return what it returns (JSON)."""
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - child
        os.close(r)
        try:
            uid, gid = os.getuid(), os.getgid()
            sc.unshare(sc.CLONE_NEWUSER | sc.CLONE_NEWNS, "user|mount")
            rootfs.write_file("/proc/self/setgroups", "deny")
            rootfs.write_file("/proc/self/uid_map", f"{uid} {uid} 1\n")
            rootfs.write_file("/proc/self/gid_map", f"{gid} {gid} 1\n")
            sc.mount(None, "/", None, sc.MS_REC | sc.MS_PRIVATE)
            out = fn()
        except BaseException as e:  # noqa: BLE001 - report anything to the parent
            out = {"error": f"{type(e).__name__}: {e}"}
        os.write(w, json.dumps(out).encode())
        os._exit(0)
    os.close(w)
    data = b""
    while chunk := os.read(r, 65536):
        data += chunk
    os.close(r)
    os.waitpid(pid, 0)
    return json.loads(data)


@pytest.mark.parametrize("fallback", [False, True])
def test_read_only_binds_cover_submounts_and_flags_stick(tmp_path, fallback) -> None:
    """mount_setattr(AT_RECURSIVE), and the remount walk used on kernels before 5.12."""
    src, sub = tmp_path / "src", tmp_path / "src" / "sub"
    sub.mkdir(parents=True)
    dst = tmp_path / "dst"
    dst.mkdir()

    def body() -> dict:
        sc.mount("tmpfs", str(sub), "tmpfs", 0, "mode=0755")  # a submount inside the source
        sc.mount(str(src), str(dst), None, sc.MS_BIND | sc.MS_REC)
        if fallback:
            rootfs._remount_fallback(str(dst), rootfs._RO)
        else:
            rootfs._lock_flags(str(dst), rootfs._RO, "dst")
        out: dict[str, object] = {}
        for p in (dst, dst / "sub"):
            f = os.statvfs(p).f_flag
            out[str(p)] = [bool(f & os.ST_RDONLY), bool(f & os.ST_NOSUID), bool(f & os.ST_NODEV)]
            try:
                open(p / "x", "w").close()
                out[str(p) + ":write"] = "ok"
            except OSError as e:
                out[str(p) + ":write"] = e.errno
        out["src-writable"] = os.access(src, os.W_OK)
        return out

    out = _in_namespace(body)
    assert "error" not in out, out
    assert out[str(dst)] == [True, True, True] and out[str(dst / "sub")] == [True, True, True]
    assert out[str(dst) + ":write"] == 30 and out[str(dst / "sub") + ":write"] == 30  # EROFS
    assert out["src-writable"]  # the source itself is untouched


def test_paths_through_an_absolute_symlink_in_the_root_are_refused(tmp_path) -> None:
    root = tmp_path / "root"
    root.mkdir()

    def body() -> dict:
        rootfs._LINKS.clear()
        rootfs._symlink(str(root), str(tmp_path / "outside"), "/escape")  # /escape -> a host path
        try:
            rootfs._mkdirs(str(root), "/escape/x")
        except rootfs.StepFailed as e:
            return {"refused": e.syscall, "err": e.err}
        return {"refused": None}

    out = _in_namespace(body)
    assert out == {"refused": "mkdir(/escape/x)", "err": 18}  # EXDEV
    assert not (tmp_path / "outside").exists()


def test_loopback_comes_up_with_one_ioctl() -> None:
    def body() -> dict:
        import socket

        sc.unshare(sc.CLONE_NEWNET, "net")
        before = socket.if_nameindex()
        sc.loopback_up()
        s = socket.socket()
        s.bind(("127.0.0.1", 0))
        s.listen(1)
        c = socket.create_connection(s.getsockname(), timeout=2)
        c.close()
        s.close()
        return {"ifaces": [n for _, n in before]}

    assert _in_namespace(body) == {"ifaces": ["lo"]}


def test_a_bind_destination_through_a_host_symlink_is_refused(tmp_path) -> None:
    """A later bind inside an earlier one must not follow the host tree's absolute symlinks
    (mkdir would create directories on the host)."""
    tree = tmp_path / "tree"
    tree.mkdir()
    (tree / "link").symlink_to(tmp_path / "host-dir")  # absolute, pointing outside
    root = tmp_path / "root"
    root.mkdir()

    def body() -> dict:
        from sandbox.policy import Mount

        rootfs._LINKS.clear()
        rootfs._bind(str(root), Mount("bind", "/t", str(tree), writable=True))
        try:
            rootfs._mkdirs(str(root), "/t/link/sub")
        except rootfs.StepFailed as e:
            return {"refused": e.syscall}
        return {"refused": None}

    assert _in_namespace(body) == {"refused": "mkdir(/t/link/sub)"}
    assert not (tmp_path / "host-dir").exists()
