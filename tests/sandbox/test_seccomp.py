"""sandbox.seccomp: OCI profiles compiled to BPF once, cached by hash, loaded without the compiler."""

from __future__ import annotations

import ctypes
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from sandbox.errors import SandboxError
from sandbox.seccomp import compile_profile, find_profile, profile_names, program_for, programs_for

from .conftest import SYSTEM_PYTHON

_GOARCH = {"x86_64": "amd64", "aarch64": "arm64"}.get(os.uname().machine, os.uname().machine)


def test_shipped_profiles_are_found_and_compile() -> None:
    assert {"default", "strict"} <= set(profile_names())
    for name in ("default", "strict"):
        data = json.loads(find_profile(name).read_text())
        assert data["defaultAction"] in ("SCMP_ACT_ALLOW", "SCMP_ACT_ERRNO")
        bpf = compile_profile(data, source=name)
        assert bpf and len(bpf) % 8 == 0


def test_cached_by_content_hash_and_loaded_without_the_compiler(tmp_path) -> None:
    cache = tmp_path / "cache"
    first = programs_for("default", str(cache))
    files = sorted((cache / "seccomp").iterdir())
    assert len(files) == 2 and all(f.suffix == ".bpf" and len(f.stem) == 64 for f in files)
    # A warm run reads the cache and never imports libseccomp's binding.
    code = ("import sys; from sandbox.seccomp import programs_for; p = programs_for('default', sys.argv[1]);"
            "print(len(p), 'pyseccomp' in sys.modules)")
    r = subprocess.run([sys.executable, "-c", code, str(cache)], capture_output=True, text=True, check=True)
    assert r.stdout.split() == ["2", "False"]
    assert programs_for("default", str(cache)) == first
    # Another profile (another hash) is compiled and cached beside it.
    own = tmp_path / "own.json"
    own.write_text(json.dumps({"defaultAction": "SCMP_ACT_ALLOW",
                               "syscalls": [{"names": ["uname"], "action": "SCMP_ACT_ERRNO"}]}))
    program_for(str(own), str(cache))
    assert len(list((cache / "seccomp").iterdir())) == 3


def test_an_unwritable_cache_only_costs_a_compile(tmp_path) -> None:
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("")
    assert program_for("strict", str(blocker)) == program_for("strict", str(tmp_path / "ok"))


@pytest.mark.parametrize("profile, words", [
    ({"syscalls": []}, "no defaultAction"),
    ({"defaultAction": "SCMP_ACT_MAYBE"}, "unknown action"),
    ({"defaultAction": "SCMP_ACT_ALLOW", "syscalls": [{"names": ["uname"], "action": "SCMP_ACT_ERRNO",
                                                        "args": [{"index": 0, "value": 1, "op": "SCMP_CMP_ABOUT"}]}]},
     "unknown comparison"),
    ({"defaultAction": "SCMP_ACT_ALLOW", "syscalls": [{"names": "uname", "action": "SCMP_ACT_ERRNO"}]}, "list of"),
])
def test_bad_profiles_are_named(profile, words) -> None:
    with pytest.raises(SandboxError, match=words):
        compile_profile(profile, source="p.json")


def test_missing_or_broken_profile_files(tmp_path) -> None:
    with pytest.raises(SandboxError, match="no such file"):
        find_profile(str(tmp_path / "nope.json"))
    with pytest.raises(SandboxError, match="unknown seccomp profile 'nope'"):
        find_profile("nope")
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(SandboxError, match="not valid JSON"):
        program_for(str(bad), str(tmp_path))


def _uname_rule(**cond) -> dict:
    return {"defaultAction": "SCMP_ACT_ALLOW",
            "syscalls": [{"names": ["uname"], "action": "SCMP_ACT_ERRNO", "errnoRet": 13, **cond}]}


UNAME = ("import ctypes; libc = ctypes.CDLL(None, use_errno=True); b = ctypes.create_string_buffer(400);"
         "print(libc.uname(b), ctypes.get_errno())")


@pytest.mark.parametrize("cond, denied", [
    ({}, True),
    ({"includes": {"arches": [_GOARCH]}}, True),
    ({"excludes": {"arches": [_GOARCH]}}, False),
    ({"includes": {"caps": ["CAP_SYS_ADMIN"]}}, False),  # the sandbox holds no capability
    ({"excludes": {"caps": ["CAP_SYS_ADMIN"]}}, True),
    ({"includes": {"minKernel": "99.0"}}, False),
    ({"includes": {"minKernel": "3.0"}}, True),
])
def test_oci_includes_and_excludes_in_a_real_sandbox(boxes, world, tmp_path, cond, denied) -> None:
    box = boxes["root"]
    prof = world.user_dir("root", "profile") / "p.json"
    prof.write_text(json.dumps(_uname_rule(**cond)))
    r = box.run(["--profile", str(prof)], [SYSTEM_PYTHON, "-c", UNAME])
    assert r.returncode == 0, r.stderr
    assert r.stdout.split() == (["-1", "13"] if denied else ["0", "0"])


def test_syscalls_newer_than_libseccomp_return_enosys(boxes) -> None:
    """Under an allow-by-default profile a syscall libseccomp cannot name could not be denied
    by name: it gets ENOSYS (the kernel here implements it: outside, it does not say ENOSYS)."""
    sc = pytest.importorskip("pyseccomp")
    arch = sc.system_arch()
    newest = max(n for n in range(1024) if _known(sc, arch, n))
    libc = ctypes.CDLL(None, use_errno=True)
    candidates = []
    for nr in range(newest + 1, newest + 20):
        ret = libc.syscall(ctypes.c_long(nr), ctypes.c_long(-1), ctypes.c_long(0), ctypes.c_long(0))
        if not (ret == -1 and ctypes.get_errno() == 38):
            candidates.append(nr)
            break
    if not candidates:
        pytest.skip(f"this kernel implements no syscall past libseccomp's newest ({newest}): nothing to show")
    nr = candidates[0]
    code = (f"import ctypes; libc = ctypes.CDLL(None, use_errno=True);"
            f"r = libc.syscall(ctypes.c_long({nr}), ctypes.c_long(-1), ctypes.c_long(0), ctypes.c_long(0));"
            "print(r, ctypes.get_errno())")
    r = boxes["root"].run([], [SYSTEM_PYTHON, "-c", code])
    assert r.stdout.split() == ["-1", "38"], (nr, r.stdout, r.stderr)


def _known(sc, arch, nr) -> bool:
    try:
        return bool(sc.resolve_syscall(arch, nr))
    except ValueError:
        return False


def test_profiles_ship_in_the_package_data() -> None:
    here = Path(__file__).resolve().parents[2]
    assert (here / "sandbox" / "profiles").resolve() == (here / "seccomp").resolve()
    assert find_profile("default").resolve() == (here / "seccomp" / "default.json").resolve()


def test_a_cached_program_is_trusted_only_when_nobody_else_could_have_written_it(tmp_path) -> None:
    # Shared caches: a .bpf another user could have written or changed (group/other-writable)
    # would let them choose the sandbox's syscall filter. It is compiled afresh instead.
    cache = tmp_path / "cache"
    real = program_for("strict", str(cache))
    (cached,) = (cache / "seccomp").iterdir()
    assert cached.stat().st_mode & 0o777 == 0o600
    planted = bytes(8)  # one BPF instruction: a valid-looking program that is not the profile
    cached.write_bytes(planted)
    assert program_for("strict", str(cache)) == planted  # ours and 0600: the cache is used ...
    cached.chmod(0o666)
    assert program_for("strict", str(cache)) == real  # ... writable by others: recompiled
    assert cached.read_bytes() == real and cached.stat().st_mode & 0o777 == 0o600  # and replaced
    os.chown(cached, 65534, 65534)
    cached.chmod(0o644)
    cached.write_bytes(planted)
    assert program_for("strict", str(cache)) == real  # another user's file: recompiled
