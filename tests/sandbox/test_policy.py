"""sandbox.policy: the plan as plain data (pure; no namespaces needed)."""

from __future__ import annotations

from typing import Any

import json

import pytest

from sandbox.errors import SandboxError
from sandbox.policy import Mount, Policy, filter_env, limit_value, parse_limit, python_policy

HOST_ENV = {"PATH": "/host/bin", "HOME": "/home/ann", "AWS_SECRET_ACCESS_KEY": "s3cr3t", "LC_ALL": "C.UTF-8",
            "TERM": "xterm", "PYTHONHOME": "/weird", "PYTHONPATH": "/host/lib", "SSH_AUTH_SOCK": "/run/agent"}


def make(**kw) -> Policy:
    args: dict[str, Any] = dict(uid=1000, gid=1000, user="ann", home="/home/ann", host_env=HOST_ENV,
                interpreter_prefixes=["/opt/py311", "/usr"], venv="/home/ann/p/.venv", project="/home/ann/p")
    args.update(kw)
    return python_policy(**args)


def by_dst(p: Policy) -> dict[str, Mount]:
    return {m.dst: m for m in p.mounts}


def test_what_is_bound_and_how() -> None:
    m = by_dst(make())
    assert m["/usr"].kind == "bind" and not m["/usr"].writable and m["/usr"].mirror_symlink
    assert m["/opt/py311"].kind == "bind" and not m["/opt/py311"].writable
    assert "/usr" in m and not any(d == "/usr" and mm.src != "/usr" for d, mm in m.items())
    assert m["/home/ann/p"].writable and not m["/home/ann/p/.venv"].writable
    assert m["/home/ann"].kind == "tmpfs" and m["/tmp"].kind == "tmpfs"
    assert m["/proc"].kind == "proc" and m["/dev"].kind == "dev"
    assert m["/etc/passwd"].kind == "file" and "ann:x:1000:1000::/home/ann:" in (m["/etc/passwd"].src or "")
    assert "/etc/resolv.conf" not in m  # no network, no resolver configuration
    assert m["/etc/hosts"].kind == "file" and "pypm-sandbox" in (m["/etc/hosts"].src or "")


def test_parents_are_mounted_before_children() -> None:
    order = [m.dst for m in make().mounts]
    assert order.index("/home/ann") < order.index("/home/ann/p") < order.index("/home/ann/p/.venv")
    depths = [d.count("/") for d in order]
    assert depths == sorted(depths)


def test_read_only_project_and_extra_binds() -> None:
    m = by_dst(make(writable_project=False, binds=[("/srv/data", "/data")], ro_binds=[("/srv/ref", "/srv/ref")]))
    assert not m["/home/ann/p"].writable
    assert m["/data"].src == "/srv/data" and m["/data"].writable
    assert m["/srv/ref"].src == "/srv/ref" and not m["/srv/ref"].writable


def test_a_later_mount_at_the_same_place_wins() -> None:
    m = by_dst(make(binds=[("/elsewhere", "/tmp")]))
    assert m["/tmp"].kind == "bind" and m["/tmp"].src == "/elsewhere"


def test_network_host_shares_the_network_and_its_resolver_files() -> None:
    p = make(network="host")
    assert "net" not in p.namespaces and p.network == "host"
    m = by_dst(p)
    assert m["/etc/resolv.conf"].kind == "bind" and m["/etc/resolv.conf"].optional
    assert "net" in make().namespaces


def test_root_inside_is_uid_0_with_root_home() -> None:
    p = make(root=True)
    assert (p.uid, p.gid) == (0, 0)
    assert p.environ["HOME"] == "/root" and p.environ["USER"] == "root"
    assert by_dst(p)["/root"].kind == "tmpfs"
    assert make().uid is None  # the caller's own ids by default


def test_environment_is_an_allowlist_plus_what_was_asked() -> None:
    env = make(env=["SSH_AUTH_SOCK", "EXTRA=1", "MISSING"]).environ
    assert "AWS_SECRET_ACCESS_KEY" not in env and "PYTHONPATH" not in env and "PYTHONHOME" not in env
    assert env["LC_ALL"] == "C.UTF-8" and env["TERM"] == "xterm"
    assert env["SSH_AUTH_SOCK"] == "/run/agent" and env["EXTRA"] == "1" and "MISSING" not in env
    assert env["PATH"].split(":")[0] == "/home/ann/p/.venv/bin" and "/host/bin" not in env["PATH"]
    assert env["VIRTUAL_ENV"] == "/home/ann/p/.venv" and env["HOME"] == "/home/ann" and env["PYPM_SANDBOX"] == "1"
    assert make(env=["PATH=/custom"]).environ["PATH"] == "/custom"  # explicit --env wins
    with pytest.raises(SandboxError):
        filter_env({}, ["=nope"])


def test_printable_as_text_and_json() -> None:
    p = make()
    text = p.to_text()
    assert "namespaces: user mount pid net ipc uts cgroup" in text
    assert "bind-rw /home/ann/p" in text and "bind-ro /home/ann/p/.venv" in text and "tmpfs    /tmp" in text
    assert "AWS_SECRET" not in text
    d = json.loads(p.to_json())
    assert d["network"] == "none" and d["seccomp"] == "default" and d["env"]["HOME"] == "/home/ann"
    assert {"kind": "bind", "dst": "/home/ann/p", "src": "/home/ann/p", "writable": True, "mode": 493} in d["mounts"]


@pytest.mark.parametrize("kw, words", [
    (dict(network="lan"), "network"),
    (dict(namespaces=("user", "mount")), "at least"),
    (dict(namespaces=("user", "mount", "pid", "bogus")), "unknown namespace"),
    (dict(namespaces=("user", "mount", "pid")), "net namespace"),
    (dict(mounts=(Mount("bind", "relative", "/x"),)), "absolute"),
    (dict(mounts=(Mount("bind", "/", "/x"),)), "other than /"),
    (dict(mounts=(Mount("bind", "/a/../b", "/x"),)), "normalised"),
    (dict(mounts=(Mount("overlay", "/a"),)), "unknown mount kind"),
    (dict(cwd="rel"), "working directory"),
    (dict(limits=(("memory", 1), ("cpu", 1))), "sorted"),
    (dict(limits=(("cpu", 1), ("cpu", 2))), "each name once"),
    (dict(limits=(("ram", 1),)), "unknown limit 'ram'"),
    (dict(limits=(("memory", "2G"),)), "not a whole number"),
    (dict(limits=(("memory", 0),)), "below 1"),
    (dict(limits=(("memory", 1 << 64),)), "too large"),
    (dict(limits=(("tmp-size", 1 << 20),)), "tmpfs mounts' size"),
    (dict(mounts=(Mount("bind", "/a", "/a", size=1 << 20),)), "only a tmpfs or /dev has one"),
    (dict(mounts=(Mount("tmpfs", "/a", size=-1),)), "size -1"),
])
def test_invalid_policies_are_refused(kw, words) -> None:
    args: dict[str, Any] = dict(mounts=(), env=())
    args.update(kw)
    with pytest.raises(SandboxError, match=words):
        Policy(**args)


def test_protected_paths_are_read_only_but_an_explicit_bind_wins() -> None:
    m = by_dst(make(protect=["/home/ann/p/.git"]))
    assert not m["/home/ann/p/.git"].writable
    m = by_dst(make(protect=["/home/ann/p/.git"], binds=[("/home/ann/p/.git", "/home/ann/p/.git")]))
    assert m["/home/ann/p/.git"].writable


def test_the_standalone_cli_prints_the_policy(tmp_path) -> None:
    import subprocess
    import sys

    r = subprocess.run([sys.executable, "-m", "sandbox", "--print", "--json", "--project", str(tmp_path),
                        "--network", "host", "--", "true"], capture_output=True, text=True, check=True)
    d = json.loads(r.stdout)
    assert d["network"] == "host" and "net" not in d["namespaces"]
    assert {"kind": "bind", "dst": str(tmp_path), "src": str(tmp_path), "writable": True, "mode": 493} in d["mounts"]
    r = subprocess.run([sys.executable, "-m", "sandbox", "--print", "--project", str(tmp_path)],
                       capture_output=True, text=True, check=True)
    assert f"bind-rw {tmp_path}" in r.stdout


@pytest.mark.parametrize("text, expected", [
    ("memory=2G", ("memory", 2 << 30)), ("memory=512MiB", ("memory", 512 << 20)), ("memory=64kb", ("memory", 64 << 10)),
    ("memory=1048576", ("memory", 1 << 20)), ("file-size=0", ("file-size", 0)), ("file-size=1T", ("file-size", 1 << 40)),
    ("cpu=90", ("cpu", 90)), ("cpu=90s", ("cpu", 90)), ("cpu=10m", ("cpu", 600)), ("cpu=2h", ("cpu", 7200)),
    ("processes=512", ("processes", 512)), ("open-files=1024", ("open-files", 1024)),
    ("memory=unlimited", ("memory", None)), ("cpu=Infinity", ("cpu", None)),
])
def test_limits_are_read_in_the_units_people_write(text, expected) -> None:
    assert parse_limit(text) == expected


@pytest.mark.parametrize("text, words", [
    ("memory", "not NAME=VALUE"), ("=2G", "not NAME=VALUE"), ("ram=2G", "unknown limit 'ram'"),
    ("memory=2X", "not a size"), ("memory=1.5G", "not a size"), ("memory=-1", "not a size"), ("memory=", "not a size"),
    ("memory=G", "not a size"), ("cpu=1d", "not a duration"), ("processes=10k", "not a count"),
    ("processes=0", "below 1"), ("open-files=0", "below 1"), ("memory=٣", "not a size"),  # a non-ASCII digit
    ("memory=99999999999T", "too large"),
])
def test_malformed_limits_say_why(text, words) -> None:
    with pytest.raises(ValueError, match=words):
        parse_limit(text)
    with pytest.raises(ValueError, match="not a number"):
        limit_value("memory", True)


def test_limits_are_part_of_the_policy_and_its_description() -> None:
    p = make(limits={"processes": 64, "memory": 2 << 30, "cpu": 90})
    assert p.limits == (("cpu", 90), ("memory", 2 << 30), ("processes", 64))
    assert "limits:     cpu=90s, memory=2G, processes=64" in p.to_text()
    assert json.loads(p.to_json())["limits"] == [["cpu", 90], ["memory", 2 << 30], ["processes", 64]]
    assert "limits:     none set" in make().to_text()


def test_tmp_size_sizes_every_writable_tmpfs_and_is_not_a_process_limit() -> None:
    p = make(limits={"tmp-size": 64 << 20, "open-files": 64})
    assert p.limits == (("open-files", 64),)
    m = by_dst(p)
    assert m["/tmp"].size == m["/home/ann"].size == m["/dev"].size == 64 << 20
    assert "tmpfs    /tmp (mode 1777, 64M)" in p.to_text() and "dev      /dev (tmpfs, 64M)" in p.to_text()
    assert all(mm.size == 0 for mm in make().mounts)
