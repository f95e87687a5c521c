"""The auditwheel plugin: ELF files of installed platform wheels against their tag's policy."""

from __future__ import annotations

import platform
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from pypm import plugins
from pypm.errors import PluginError
from pypm.plugins.auditwheel import audit_venv
from pypm.project import load_project
from tests.support.dists import build_wheel

from .conftest import cc, plugin_project

ARCH = platform.machine()


@pytest.fixture(scope="session")
def elves(tmp_path_factory: pytest.TempPathFactory) -> dict[str, bytes]:
    d = tmp_path_factory.mktemp("elves")
    (d / "new.c").write_text('#include <dlfcn.h>\nvoid *f(void) { return dlopen("x", RTLD_NOW); }\n')
    (d / "clean.c").write_text("int add(int a, int b) { return a + b; }\n")
    (d / "bogus.c").write_text("int bogus(void) { return 7; }\n")
    (d / "user.c").write_text("int bogus(void);\nint use(void) { return bogus(); }\n")
    cc(d / "new.so", d / "new.c")  # dlopen@GLIBC_2.34: libdl merged into libc in glibc 2.34
    cc(d / "clean.so", d / "clean.c")
    cc(d / "libbogus.so.1", d / "bogus.c")
    subprocess.run(["gcc", "-shared", "-fPIC", "-o", str(d / "user.so"), str(d / "user.c"),
                    f"-L{d}", "-l:libbogus.so.1"], check=True)
    return {n: (d / n).read_bytes() for n in ("new.so", "clean.so", "libbogus.so.1", "user.so")}


def _install(venv: Path, wheel: Path) -> None:
    # Unpacking is all an audit needs from an install: files + dist-info (RECORD, WHEEL).
    site = venv / "lib" / "python3.11" / "site-packages"
    site.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(wheel) as zf:
        zf.extractall(site)


def _wheel(tmp: Path, name: str, tag_plat: str, files: dict[str, bytes]) -> Path:
    return build_wheel(tmp / "wheels", name, "1.0", tag=f"cp311-cp311-{tag_plat}",
                       modules={f"{name}/__init__.py": "", **{f"{name}/{k}": v for k, v in files.items()}})


def test_newer_glibc_than_the_tag_is_flagged(elves: dict[str, bytes], tmp_path: Path) -> None:
    venv = tmp_path / "venv"
    _install(venv, _wheel(tmp_path, "toonew", f"manylinux_2_17_{ARCH}", {"_ext.so": elves["new.so"]}))
    checked, violations = audit_venv(venv)
    assert checked == 1
    assert [str(v) for v in violations] == [
        f"toonew 1.0 (manylinux_2_17_{ARCH}): toonew/_ext.so needs GLIBC_2.34, newer than the tag allows"]


@pytest.mark.parametrize("plat, files", [
    (f"manylinux_2_34_{ARCH}", {"_ext.so": "new.so"}),  # the tag allows 2.34
    (f"manylinux_2_17_{ARCH}", {"_ext.so": "clean.so"}),
    (f"manylinux2014_{ARCH}", {"_ext.so": "user.so", "libbogus.so.1": "libbogus.so.1"}),  # bundled
    (f"linux_{ARCH}", {"_ext.so": "new.so"}),  # promises nothing
])
def test_clean_wheels_pass(elves: dict[str, bytes], tmp_path: Path, plat: str, files: dict[str, str]) -> None:
    venv = tmp_path / "venv"
    _install(venv, _wheel(tmp_path, "fine", plat, {k: elves[v] for k, v in files.items()}))
    checked, violations = audit_venv(venv)
    assert violations == []
    assert checked == (0 if plat.startswith("linux") else 1)


def test_library_outside_the_policy_is_flagged(elves: dict[str, bytes], tmp_path: Path) -> None:
    venv = tmp_path / "venv"
    _install(venv, _wheel(tmp_path, "needy", f"manylinux_2_28_{ARCH}", {"_ext.so": elves["user.so"]}))
    _, violations = audit_venv(venv)
    assert [v.problem for v in violations] == [
        "needs libbogus.so.1, which the manylinux policy does not allow and the wheel does not bundle"]


def test_several_tags_are_held_to_the_oldest(elves: dict[str, bytes], tmp_path: Path) -> None:
    venv = tmp_path / "venv"
    _install(venv, _wheel(tmp_path, "multi", f"manylinux_2_34_{ARCH}.manylinux_2_17_{ARCH}",
                          {"_ext.so": elves["new.so"]}))
    _, violations = audit_venv(venv)
    assert [v.tag for v in violations] == [f"manylinux_2_17_{ARCH}"]


def _project(root: Path, strict: object) -> Path:
    return plugin_project(root, ["auditwheel"], tables=f"[tool.pypm.auditwheel]\nstrict = {strict}\n")


def test_plugin_warns_or_fails_by_strictness(elves: dict[str, bytes], tmp_path: Path,
                                             capsys: pytest.CaptureFixture[str]) -> None:
    venv = tmp_path / "venv"
    _install(venv, _wheel(tmp_path, "toonew", f"manylinux_2_17_{ARCH}", {"_ext.so": elves["new.so"]}))
    _install(venv, _wheel(tmp_path, "fine", f"manylinux_2_17_{ARCH}", {"_ext.so": elves["clean.so"]}))
    lenient = load_project(_project(tmp_path / "lenient", "false"))
    plugins.fire(lenient, "post-sync", venv=venv)
    err = capsys.readouterr().err
    assert "auditwheel: toonew 1.0" in err and "GLIBC_2.34" in err and "warning only" in err
    strict = load_project(_project(tmp_path / "strict", "true"))
    with pytest.raises(PluginError) as e:
        plugins.fire(strict, "post-sync", venv=venv)
    assert e.value.message == ("plugin auditwheel failed at post-sync: 1 violation(s) of the platform tag "
                               "policy in 1 wheel(s): toonew 1.0")
    bad = load_project(_project(tmp_path / "bad", '"yes"'))
    with pytest.raises(PluginError, match="`strict` must be true or false"):
        plugins.fire(bad, "post-sync", venv=venv)


def test_missing_auditwheel_library_is_named(elves: dict[str, bytes], tmp_path: Path,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    venv = tmp_path / "venv"
    _install(venv, _wheel(tmp_path, "fine", f"manylinux_2_17_{ARCH}", {"_ext.so": elves["clean.so"]}))
    monkeypatch.setitem(sys.modules, "auditwheel.policy", None)  # as if auditwheel were not installed
    with pytest.raises(PluginError) as e:
        plugins.fire(load_project(_project(tmp_path / "p", "false")), "post-sync", venv=venv)
    assert "needs the `auditwheel` library" in e.value.message and "pypm[plugins]" in e.value.message
