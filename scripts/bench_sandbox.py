#!/usr/bin/env python3
"""Start-up cost of a sandboxed run, side by side: pypm run (sandboxed and not), the bare venv
python, `uv run`, `bwrap` with a comparable policy, and `python -m sandbox` alone.

    python3 scripts/bench_sandbox.py [-n RUNS]

Builds a throwaway project with no dependencies under a temporary directory (pypm sync,
offline: nothing to download), then times `python -c pass` each way, interleaving the
commands round by round so machine load affects them alike. Prints medians and the ratio
to the bare interpreter. uv and bwrap rows are skipped, with the reason, when missing.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def _run(cmd: list[str], cwd: Path, env: dict[str, str]) -> None:
    r = subprocess.run(cmd, cwd=cwd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    if r.returncode != 0:
        raise SystemExit(f"failed ({r.returncode}): {' '.join(cmd)}\n{r.stderr}")


def _project(root: Path, name: str) -> Path:
    p = root / name
    p.mkdir()
    p.joinpath("pyproject.toml").write_text(
        f'[project]\nname = "{name}"\nversion = "0.1.0"\nrequires-python = ">=3.8"\ndependencies = []\n'
        f'\n[tool.pypm]\npython = "{sys.executable}"\n')
    return p


def _bwrap(venv: Path, project: Path, python_prefix: str) -> list[str]:
    # Parents before children, as pypm's policy orders them (a later tmpfs would hide a bind).
    cmd = ["bwrap", "--unshare-all", "--die-with-parent", "--new-session", "--cap-drop", "ALL",
           "--ro-bind", "/usr", "/usr", "--proc", "/proc", "--dev", "/dev", "--tmpfs", "/tmp",
           "--tmpfs", os.path.expanduser("~")]
    for d in ("/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32"):
        if os.path.islink(d):
            cmd += ["--symlink", os.readlink(d), d]
        elif os.path.isdir(d):
            cmd += ["--ro-bind", d, d]
    for f in ("/etc/ld.so.cache", "/etc/ssl", "/etc/localtime"):
        if os.path.exists(f):
            cmd += ["--ro-bind", f, f]
    if not python_prefix.startswith("/usr/"):
        cmd += ["--ro-bind", python_prefix, python_prefix]
    cmd += ["--bind", str(project), str(project), "--ro-bind", str(venv), str(venv),
            "--chdir", str(project), "--setenv", "PATH", f"{venv}/bin:/usr/bin:/bin",
            f"{venv}/bin/python", "-c", "pass"]
    return cmd


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("-n", "--runs", type=int, default=20)
    ap.add_argument("--pypm", choices=("venv", "host"), default="venv",
                    help="venv (default): time the `pypm` command of a clean venv with this tree installed "
                         "(what a user has); host: `python -m pypm` of this interpreter, whose site-packages "
                         ".pth files may add tens of ms to every start")
    opts = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="pypm-bench-sandbox-"))
    # Without PYTHONDONTWRITEBYTECODE: the warm-up run leaves .pyc files, as any install has.
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("PIP_", "UV_", "PYPM_", "VIRTUAL_ENV")) and k != "PYTHONDONTWRITEBYTECODE"}
    env.update(PYPM_CACHE_DIR=str(tmp / "cache"), UV_CACHE_DIR=str(tmp / "uv-cache"), UV_OFFLINE="1",
               PIP_CONFIG_FILE=os.devnull, UV_PYTHON=sys.executable, UV_PYTHON_DOWNLOADS="never")
    try:
        proj = _project(tmp, "bench")
        host_pypm = [sys.executable, "-m", "pypm"]
        pypm = host_pypm
        if opts.pypm == "venv":
            tool = tmp / "pypm-venv"
            _run([sys.executable, "-m", "venv", str(tool)], tmp, env)
            # --no-deps: `pypm run` on a synced project needs nothing but the standard library
            _run([str(tool / "bin" / "python"), "-m", "pip", "install", "-q", "--no-deps",
                  str(Path(__file__).resolve().parents[1])], tmp, env)
            pypm = [str(tool / "bin" / "pypm")]
        _run([*host_pypm, "sync", "--offline"], proj, env)
        # compiles the seccomp programs into the cache (the --no-deps venv has no pyseccomp)
        _run([*host_pypm, "run", "--", "python", "-c", "pass"], proj, env)
        venv = proj / ".venv"
        prefix = os.path.dirname(os.path.dirname(os.path.realpath(venv / "bin" / "python")))
        rows: dict[str, list[str] | str] = {
            ".venv/bin/python -c pass": [str(venv / "bin" / "python"), "-c", "pass"],
            "pypm run --no-sandbox -- python -c pass": [*pypm, "run", "--no-sandbox", "--", "python", "-c", "pass"],
            "pypm run -- python -c pass (sandboxed)": [*pypm, "run", "--", "python", "-c", "pass"],
            "python -m sandbox -- python -c pass": [sys.executable, "-m", "sandbox", "--venv", str(venv),
                                                    "--project", str(proj), "--", "python", "-c", "pass"],
        }
        uv = shutil.which("uv")
        if uv:
            uvproj = _project(tmp, "bench-uv")
            try:
                _run([uv, "run", "python", "-c", "pass"], uvproj, env)  # creates uv.lock and .venv once
                rows["uv run python -c pass"] = [uv, "run", "python", "-c", "pass"]
            except SystemExit as e:
                rows["uv run python -c pass"] = f"skipped: uv could not run offline here ({str(e).splitlines()[0]})"
        else:
            rows["uv run python -c pass"] = "skipped: uv is not installed"
        if shutil.which("bwrap"):
            rows["bwrap ... python -c pass"] = _bwrap(venv, proj, prefix)
        else:
            rows["bwrap ... python -c pass"] = "skipped: bubblewrap is not installed (apt install bubblewrap)"
        cwd = {"uv run python -c pass": tmp / "bench-uv"}
        times: dict[str, list[float]] = {k: [] for k, v in rows.items() if isinstance(v, list)}
        for name in times:  # warm up (page cache, compiled seccomp program and helper, pypm's run plan)
            for _ in range(2):
                _run(rows[name], cwd.get(name, proj), env)  # type: ignore[arg-type]
        for _ in range(opts.runs):
            for name in times:
                t = time.perf_counter()
                _run(rows[name], cwd.get(name, proj), env)  # type: ignore[arg-type]
                times[name].append((time.perf_counter() - t) * 1000)
        base = statistics.median(times[".venv/bin/python -c pass"])
        print(f"{'command':45} {'median':>9} {'min':>9} {'ratio':>7}   ({opts.runs} runs each, {os.cpu_count()} CPUs,"
              f" load {os.getloadavg()[0]:.1f})")
        for name, v in rows.items():
            if isinstance(v, str):
                print(f"{name:45} {v}")
                continue
            med = statistics.median(times[name])
            print(f"{name:45} {med:7.1f}ms {min(times[name]):7.1f}ms {med / base:6.2f}x")
        sandboxed = statistics.median(times["pypm run -- python -c pass (sandboxed)"])
        plain = statistics.median(times["pypm run --no-sandbox -- python -c pass"])
        print(f"sandbox overhead inside pypm run: {sandboxed - plain:+.1f} ms (sandboxed - --no-sandbox)")
        if "bwrap ... python -c pass" in times:
            print(f"bwrap's own overhead: {statistics.median(times['bwrap ... python -c pass']) - base:+.1f} ms")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
