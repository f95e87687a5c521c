"""Fixtures for the plugin tests: C plugins compiled with the machine's compiler."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from pypm.plugins.native import include_dir

CSRC = Path(__file__).parent / "csrc"


def cc(out: Path, *sources: Path, shared: bool = True, defines: tuple[str, ...] = ()) -> Path:
    compiler = shutil.which("cc") or shutil.which("gcc")
    if compiler is None:
        pytest.skip("no C compiler (cc/gcc) on PATH: native plugin tests need one")
    args = [compiler, "-O1", "-Wall", "-Werror", f"-I{include_dir()}", "-o", str(out), *map(str, sources)]
    if shared:
        args[1:1] = ["-shared", "-fPIC"]
    args += [f"-D{d}" for d in defines]
    subprocess.run(args, check=True)
    return out


@pytest.fixture(scope="session")
def native_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A plugin-path directory holding pypm_recorder.so (every stage) and pypm_syncer.so (sync only)."""
    d = tmp_path_factory.mktemp("native-plugins")
    cc(d / "pypm_recorder.so", CSRC / "recorder.c")
    cc(d / "pypm_syncer.so", CSRC / "recorder.c", defines=("STAGES=(PYPM_STAGE_PRE_SYNC|PYPM_STAGE_POST_SYNC)",))
    return d
