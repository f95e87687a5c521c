"""sandbox.record: the frozen records Policy, Mount and Caller are made of."""

from __future__ import annotations

import pytest

from sandbox.host import Caller
from sandbox.policy import Mount, Policy, with_changes
from sandbox.record import as_dict, fields_of


def test_fields_defaults_equality_and_hash() -> None:
    m = Mount("bind", "/a", "/b", writable=True)
    assert fields_of(m) == ("kind", "dst", "src", "writable", "optional", "mirror_symlink", "mode", "size")
    assert (m.optional, m.mode) == (False, 0o755)
    assert m == Mount(kind="bind", dst="/a", src="/b", writable=True) and m != Mount("bind", "/a", "/b")
    assert hash(m) == hash(Mount("bind", "/a", "/b", writable=True))
    assert repr(m).startswith("Mount(kind='bind', dst='/a', src='/b', writable=True")
    assert as_dict(Caller(1, 2, "u", "/home/u", "/bin/sh")) == {"uid": 1, "gid": 2, "user": "u", "home": "/home/u",
                                                               "shell": "/bin/sh"}


def test_frozen_and_checked_arguments() -> None:
    m = Mount("tmpfs", "/t")
    with pytest.raises(AttributeError, match="frozen"):
        m.dst = "/x"  # type: ignore[misc]
    with pytest.raises(TypeError, match="missing required argument: 'dst'"):
        Mount("tmpfs")  # type: ignore[call-arg]
    with pytest.raises(TypeError, match="unexpected keyword argument 'colour'"):
        Mount("tmpfs", "/t", colour=3)  # type: ignore[call-arg]
    with pytest.raises(TypeError, match="multiple values"):
        Mount("tmpfs", "/t", dst="/u")  # type: ignore[misc]


def test_replace_validates_again() -> None:
    p = Policy(mounts=(Mount("tmpfs", "/tmp"),), env=(("A", "1"),))
    q = with_changes(p, cwd="/tmp")
    assert q.cwd == "/tmp" and q.mounts == p.mounts and p.cwd == "/"
    from sandbox.errors import SandboxError

    with pytest.raises(SandboxError, match="network"):
        with_changes(p, network="bogus")
