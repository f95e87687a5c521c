"""pypm.venv: venvs built in-process work with the real interpreter; half-built ones never survive."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from pypm.errors import InstallError
from pypm.interpreter import query_interpreter
from pypm.venv import BUILDING_MARKER, VenvLayout, create_venv, ensure_venv, read_pyvenv_cfg, venv_matches

PY = "/usr/bin/python3"
OTHER = Path("/root/.pyenv/versions/3.12.1/bin/python3.12")
REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(autouse=True)
def _cache(tmp_path, monkeypatch):
    monkeypatch.setenv("PYPM_CACHE_DIR", str(tmp_path / "cache"))


@pytest.fixture
def interp():
    return query_interpreter(PY)


def ask(python: Path, code: str) -> str:
    return subprocess.run([str(python), "-c", code], capture_output=True, text=True, check=True,
                          env={"PATH": "/usr/bin:/bin"}).stdout.strip()


def test_created_venv_is_a_real_venv(tmp_path, interp):
    root = tmp_path / ".venv"
    t0 = time.monotonic()
    layout = create_venv(root, interp)
    assert time.monotonic() - t0 < 1.0  # no interpreter started, no pip
    assert layout.python == root / "bin" / "python"
    out = ask(layout.python, "import sys, sysconfig; print(sys.prefix); print(sys.base_prefix); "
                             "print(sysconfig.get_paths()['purelib']); print(sys.flags.no_site)")
    prefix, base, purelib, _ = out.splitlines()
    assert Path(prefix) == root and base != prefix and Path(purelib) == layout.purelib
    assert layout.purelib.is_dir() and (root / "lib64").is_symlink()
    for name in ("python", "python3", "python3.11"):
        assert (root / "bin" / name).is_symlink()
    cfg = read_pyvenv_cfg(root)
    assert cfg is not None
    assert cfg["home"] == "/usr/bin" and cfg["include-system-site-packages"] == "false"
    assert cfg["version_info"] == interp.version_str and not (root / BUILDING_MARKER).exists()
    # the system's site-packages stay out
    assert "/usr/lib/python3/dist-packages" not in ask(layout.python, "import sys; print(sys.path)")


def test_activate_script_sets_the_environment(tmp_path, interp):
    layout = create_venv(tmp_path / "proj" / ".venv", interp, prompt="proj")
    out = subprocess.run(["bash", "-c", f". {layout.scripts}/activate && echo $VIRTUAL_ENV && command -v python "
                                        "&& echo $VIRTUAL_ENV_PROMPT"],
                         capture_output=True, text=True, check=True, env={"PATH": "/usr/bin:/bin"}).stdout.split()
    assert out == [str(layout.root), str(layout.python), "(proj)"]


def test_ensure_venv_is_a_no_op_when_it_matches(tmp_path, interp):
    root = tmp_path / ".venv"
    layout, created = ensure_venv(root, interp)
    assert created
    (layout.purelib / "keep.txt").write_text("x")
    cfg_mtime = (root / "pyvenv.cfg").stat().st_mtime_ns
    layout2, created2 = ensure_venv(root, interp)
    assert not created2 and layout2 == layout
    assert (layout.purelib / "keep.txt").exists() and (root / "pyvenv.cfg").stat().st_mtime_ns == cfg_mtime


def test_venv_is_recreated_when_the_interpreter_changes(tmp_path, interp):
    if not os.access(OTHER, os.X_OK):
        pytest.skip(f"a second interpreter is needed for this test and {OTHER} is not available")
    root = tmp_path / ".venv"
    layout, _ = ensure_venv(root, interp)
    (layout.purelib / "old.txt").write_text("x")
    other = query_interpreter(OTHER)
    assert not venv_matches(root, other)
    layout2, created = ensure_venv(root, other)
    assert created and not (layout.purelib / "old.txt").exists()
    assert ask(layout2.python, "import sys; print(sys.version_info[:2])") == "(3, 12)"
    assert VenvLayout.from_venv(root) == layout2


def test_from_venv_reads_the_layout_without_an_interpreter(tmp_path, interp):
    layout = create_venv(tmp_path / ".venv", interp)
    assert VenvLayout.from_venv(tmp_path / ".venv") == layout
    with pytest.raises(InstallError, match="not a virtual environment"):
        VenvLayout.from_venv(tmp_path)


def test_a_leftover_marker_means_half_built_and_is_recreated(tmp_path, interp):
    root = tmp_path / ".venv"
    layout = create_venv(root, interp)
    (layout.purelib / "junk.py").write_text("")
    (root / BUILDING_MARKER).write_text("12345\n")  # as a kill -9 during creation leaves it
    assert not venv_matches(root, interp)
    _, created = ensure_venv(root, interp)
    assert created and not (layout.purelib / "junk.py").exists() and not (root / BUILDING_MARKER).exists()


def test_refuses_to_delete_a_directory_that_is_not_a_venv(tmp_path, interp):
    root = tmp_path / "precious"
    root.mkdir()
    (root / "thesis.tex").write_text("years of work")
    with pytest.raises(InstallError, match="not a virtual environment") as ei:
        create_venv(root, interp)
    assert ei.value.hint and (root / "thesis.tex").exists()
    f = tmp_path / "afile"
    f.write_text("x")
    with pytest.raises(InstallError, match="not a directory"):
        create_venv(f, interp)
    empty = tmp_path / "empty"
    empty.mkdir()
    assert create_venv(empty, interp).python.exists()


_SLOW_CHILD = textwrap.dedent("""
    import sys, time
    sys.path.insert(0, {repo!r})
    import pypm.venv as v
    from pypm.interpreter import query_interpreter
    orig = v._populate
    def slow(layout, interp, prompt):
        orig(layout, interp, prompt)
        print("building", flush=True)
        time.sleep(30)
    v._populate = slow
    try:
        v.create_venv({root!r}, query_interpreter({py!r}))
    except KeyboardInterrupt:
        print("interrupted", flush=True)
        sys.exit(130)
""")


def _start_slow_child(root: Path) -> subprocess.Popen[str]:
    p = subprocess.Popen([sys.executable, "-c", _SLOW_CHILD.format(repo=str(REPO), root=str(root), py=PY)],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=os.environ.copy())
    assert p.stdout is not None
    line = p.stdout.readline()
    assert line.strip() == "building", p.stderr.read() if p.stderr else ""
    assert (root / BUILDING_MARKER).exists() and (root / "pyvenv.cfg").exists()
    return p


def test_ctrl_c_during_creation_leaves_no_venv(tmp_path):
    root = tmp_path / ".venv"
    p = _start_slow_child(root)
    p.send_signal(signal.SIGINT)
    out, err = p.communicate(timeout=20)
    assert p.returncode == 130 and "interrupted" in out, err
    assert not root.exists()


def test_kill_9_during_creation_is_cleaned_up_by_the_next_run(tmp_path, interp):
    root = tmp_path / ".venv"
    p = _start_slow_child(root)
    p.kill()
    p.wait(timeout=20)
    assert (root / BUILDING_MARKER).exists()  # nothing could clean up after SIGKILL ...
    layout, created = ensure_venv(root, interp)  # ... so the next run does
    assert created and not (root / BUILDING_MARKER).exists()
    assert ask(layout.python, "import sys; print(sys.prefix)") == str(root)


def test_old_venvs_are_moved_aside_before_deletion_and_leftovers_swept(tmp_path, interp):
    root = tmp_path / ".venv"
    create_venv(root, interp)
    # what an interrupted deletion leaves: a renamed, half-deleted venv beside the new one
    leftover = tmp_path / ".venv.pypm-old-1-2"
    (leftover / "lib").mkdir(parents=True)
    (tmp_path / "unrelated").mkdir()
    create_venv(root, interp)  # replaces the existing venv
    assert not leftover.exists() and (tmp_path / "unrelated").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == [".venv", "cache", "unrelated"]
