#!/usr/bin/env python3
"""The side-by-side benchmark: pypm against uv, pip-tools, PDM and Poetry on real projects.

    python3 scripts/bench.py                 # every set, tool and scenario: canary 2 rounds, web/torch 1
    python3 scripts/bench.py --quick         # one round: a smoke run
    python3 scripts/bench.py --sets canary --tools pypm,uv --scenarios sync_warm,sync_noop -r 5

What it does, so the numbers can be trusted:
- The peers are installed by the script into venvs of their own (`<workdir>/tools/<tool>`),
  with pip, from the default index; pypm is built from this working tree into one too
  (`--pypm host` uses the pypm importable by the interpreter running this script instead).
- Every tool gets the same sterile environment: `PIP_CONFIG_FILE=/dev/null`, no host
  `PIP_*`/`UV_*`/`PDM_*`/`POETRY_*`/`PYPM_*` variables, a private `HOME`/XDG tree and a
  private cache directory per tool (wiped for the cold scenarios), the same index URL
  (`pypm.config.default_index_url()` as seen without pip's machine config, passed to each tool
  explicitly; Poetry gets it as its primary source, because Poetry's default source uses a
  JSON endpoint the registry does not serve), the same interpreter, no find-links except
  where a set asks for one.
- The projects are virtual (no `[build-system]`): each tool installs the locked set only,
  so the numbers measure the package manager, not a build backend.
- Order is A B A B: within each scenario every tool runs once per round, in turn.
- Rounds: `-r` (default 2) for the canary, at most `--big-rounds` (default 1) for the web stack
  and torch, where pip-tools, PDM and Poetry take minutes; but the steady-state scenarios,
  `sync_noop` and `run` (tens of milliseconds for pypm and uv, under a second for every
  peer), get at least `--steady-rounds` (default 7) in every set: one or two samples of a
  ~20 ms command swing by a quarter on a shared machine, more than the differences measured.
- Wall time is measured around the process; peak memory is the larger of the biggest single
  process (`wait4` ru_maxrss) and the polled memory of the process tree (10 ms): its RSS when it
  is one process, else its processes' anonymous memory plus the largest file-backed share
  (`_tree_memory`: summed RSS counts the interpreter's and its libraries' pages once per
  process). A floor on every reading: the kernel starts a spawned process's ru_maxrss at the RSS of the process that spawned it (this
  script, ~21 MB), so readings at that level mean "at most that".
- `run` is `TOOL run python -c pass`; the table shows its wall time and the overhead over a
  bare `.venv/bin/python -c pass` (measured in the same rounds); pypm is measured sandboxed
  and not.

Output: a JSON file with every sample and a markdown table (also printed).
This script uses the live default index: it is a benchmark, not a test.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import psutil

TYPE_CHECKING = False  # annotations only: no typing import
if TYPE_CHECKING:
    from typing import Any

REPO = Path(__file__).resolve().parent.parent
TORCH_DIR = Path("/opt/wheels")
PEERS = {  # tool -> what pip installs into its venv
    "uv": ["uv"],
    "pip-tools": ["pip-tools"],
    # PDM 2.29 breaks with hishel 2 (AttributeError: SyncSqliteStorage); pin what it was built on.
    "pdm": ["pdm", "hishel<2"],
    "poetry": ["poetry"],
}
ALL_TOOLS = ["pypm", "uv", "pip-tools", "pdm", "poetry"]
SCENARIOS = ["lock_cold", "lock_warm", "lock_noop", "sync_cold", "sync_warm", "sync_noop", "run", "script", "tool"]
SCRIPT_NAME = "bench_script.py"
# The `tool` scenario: a command-line tool from the index in an environment of its own, made by an
# untimed first run (`pypm x TOOL`, `uvx TOOL`), as a user runs a linter. Measured in the canary
# set only: it does not depend on the set.
TOOL_COMMAND = ["ruff", "--version"]


# --------------------------------------------------------------------------- the projects

@dataclass
class Dataset:
    name: str
    title: str
    requires_python: str
    dependencies: list[str]
    dev: list[str] = field(default_factory=list)
    find_links: bool = False  # the torch wheel lives in a find-links directory


def torch_wheel() -> Path | None:
    found = sorted(TORCH_DIR.glob("torch-*+cpu-cp311-*.whl")) if TORCH_DIR.is_dir() else []
    return found[-1] if found else None


def datasets() -> dict[str, Dataset]:
    linux64 = 'sys_platform == "linux" and platform_machine == "x86_64"'
    sets = {
        "canary": Dataset(
            "canary", "canary (my-lib without torch)", ">=3.9",
            ["requests==2.32.3", 'tomli>=2; python_version < "3.11"'],
            ["black==24.4.2", "pytest==8.0.2", "mypy==1.10.0"],
        ),
        # A typical web service's stack: ~60 packages once resolved.
        "web": Dataset(
            "web", "web stack (~60 packages)", ">=3.11",
            ["fastapi", "uvicorn[standard]", "sqlalchemy", "alembic", "pydantic-settings",
             "celery[redis]", "httpx", "jinja2", "python-multipart", "gunicorn",
             "psycopg[binary]", "requests", "orjson", "structlog", "sentry-sdk",
             "email-validator", "pyjwt[crypto]", "flask", "pyyaml", "rich"],
            ["pytest", "ruff"],
        ),
    }
    wheel = torch_wheel()
    if wheel is not None:
        version = wheel.name.split("-")[1]
        sets["torch"] = Dataset(
            "torch", f"torch {version} CPU wheel (find-links)", "==3.11.*",
            [f"torch=={version}; {linux64}"], [], find_links=True,
        )
    return sets


def _toml_list(items: list[str]) -> str:
    return "[" + ", ".join(json.dumps(i) for i in items) + "]"


def _poetry_dep(req: str) -> tuple[str, str]:
    """`name[extras]==1.0; marker` -> a Poetry dependency line (name, inline table)."""
    from packaging.requirements import Requirement

    r = Requirement(req)
    parts = [f"version = {json.dumps(str(r.specifier) or '*')}"]
    if r.extras:
        parts.append(f"extras = {_toml_list(sorted(r.extras))}")
    if r.marker:
        parts.append(f"markers = {json.dumps(str(r.marker))}")
    return r.name, "{ " + ", ".join(parts) + " }"


def write_script(ds: Dataset, root: Path, index_url: str) -> None:
    """A PEP 723 script that needs the set's dependencies (the `script` scenario), with the index
    in each tool's words (uv's `[[tool.uv.index]]`, pypm's `[tool.pypm] index-url`)."""
    root.mkdir(parents=True, exist_ok=True)
    lines = ["/// script", f"requires-python = {json.dumps(ds.requires_python)}",
             f"dependencies = {_toml_list(list(ds.dependencies))}", "",
             "[tool.pypm]", f"index-url = {json.dumps(index_url)}", "",
             "[[tool.uv.index]]", 'name = "bench"', f"url = {json.dumps(index_url)}", "default = true", "///"]
    (root / SCRIPT_NAME).write_text("".join(f"# {x}\n" if x else "#\n" for x in lines) + "pass\n")


def write_project(tool: str, ds: Dataset, root: Path, index_url: str, python: Path) -> None:
    """The same project, told to each tool in its own words."""
    root.mkdir(parents=True, exist_ok=True)
    deps = list(ds.dependencies)
    if tool == "pip-tools":
        lines = deps + ds.dev
        if ds.find_links:
            lines = [f"--find-links {TORCH_DIR}"] + lines
        (root / "requirements.in").write_text("\n".join(lines) + "\n")
        return
    if tool == "poetry" and ds.find_links:
        # Poetry has no find-links: the wheel is named by path instead (same file, same bytes).
        wheel = torch_wheel()
        assert wheel is not None, "a find-links set exists only when the torch wheel was found"
        deps = [f"torch @ {wheel.as_uri()} ; {d.split(';', 1)[1].strip()}" for d in deps]
    text = (
        "[project]\n"
        f'name = "bench-{ds.name}"\nversion = "0.1.0"\n'
        f"requires-python = {json.dumps(ds.requires_python)}\n"
        f"dependencies = {_toml_list(deps)}\n"
    )
    if ds.dev and tool != "poetry":
        text += f"\n[dependency-groups]\ndev = {_toml_list(ds.dev)}\n"
    if tool == "pypm":
        # The interpreter in the project (as UV_PYTHON for uv), not as a --python flag, so that
        # `pypm run` (no flag) sees the venv as current.
        text += f"\n[tool.pypm]\nindex-url = {json.dumps(index_url)}\npython = {json.dumps(str(python))}\n"
        if ds.find_links:
            text += f"find-links = {_toml_list([str(TORCH_DIR)])}\n"
        text += '\n[tool.pypm.sandbox]\nnetwork = "none"\n'
    elif tool == "uv":
        text += "\n[tool.uv]\npackage = false\n"
        text += f'\n[[tool.uv.index]]\nname = "bench"\nurl = {json.dumps(index_url)}\ndefault = true\n'
        if ds.find_links:
            # uv's plain find-links lose to the index's torch 2.13.0 (first-index strategy): the
            # flat index is named as torch's source, which is what uv's docs advise for local builds.
            text += (f'\n[[tool.uv.index]]\nname = "wheels"\nurl = {json.dumps(str(TORCH_DIR))}\n'
                     'format = "flat"\nexplicit = true\n\n[tool.uv.sources]\ntorch = { index = "wheels" }\n')
    elif tool == "pdm":
        text += "\n[tool.pdm]\ndistribution = false\n"
        text += f'\n[[tool.pdm.source]]\nname = "pypi"\nurl = {json.dumps(index_url)}\n'
        if ds.find_links:
            text += f'\n[[tool.pdm.source]]\nname = "wheels"\nurl = {json.dumps(TORCH_DIR.as_uri())}\ntype = "find_links"\n'
    elif tool == "poetry":
        text += "\n[tool.poetry]\npackage-mode = false\n"
        text += f'\n[[tool.poetry.source]]\nname = "bench"\nurl = {json.dumps(index_url)}\npriority = "primary"\n'
        if ds.dev:
            text += "\n[tool.poetry.group.dev.dependencies]\n"
            for d in ds.dev:
                name, spec = _poetry_dep(d)
                text += f"{name} = {spec}\n"
    (root / "pyproject.toml").write_text(text)


# --------------------------------------------------------------------------- the tools

@dataclass
class Tool:
    name: str
    home: Path          # private HOME/XDG tree and cache
    bin: Path           # where its executables are
    python: Path        # the interpreter every project's venv is made with

    @property
    def cache(self) -> Path:
        return self.home / "cache"

    def env(self, base: dict[str, str]) -> dict[str, str]:
        env = dict(base)
        env.update(
            HOME=str(self.home), XDG_CACHE_HOME=str(self.cache),
            XDG_CONFIG_HOME=str(self.home / "config"), XDG_DATA_HOME=str(self.home / "data"),
        )
        if self.name == "pypm":
            env["PYPM_CACHE_DIR"] = str(self.cache / "pypm")
        elif self.name == "uv":
            env.update(UV_CACHE_DIR=str(self.cache / "uv"), UV_PYTHON=str(self.python),
                       UV_PYTHON_DOWNLOADS="never", UV_NO_CONFIG="1", UV_NO_PROGRESS="1")
        elif self.name == "pip-tools":
            env["PIP_CACHE_DIR"] = str(self.cache / "pip")
        elif self.name == "pdm":
            # No PDM_PYTHON: pointed at a base interpreter it switches PDM to PEP 582
            # (__pypackages__) instead of a venv; PATH already starts with the interpreter.
            env.update(PDM_CACHE_DIR=str(self.cache / "pdm"), PDM_CHECK_UPDATE="false",
                       PDM_NON_INTERACTIVE="1")
        elif self.name == "poetry":
            env.update(POETRY_CACHE_DIR=str(self.cache / "poetry"),
                       POETRY_CONFIG_DIR=str(self.home / "config" / "poetry"),
                       POETRY_VIRTUALENVS_IN_PROJECT="true", POETRY_NO_INTERACTION="1")
        return env

    def lockfile(self, root: Path) -> Path:
        return root / {"pypm": "pypm.lock", "uv": "uv.lock", "pip-tools": "requirements.txt",
                       "pdm": "pdm.lock", "poetry": "poetry.lock"}[self.name]

    def lock(self) -> list[str]:
        b = self.bin
        return {
            "pypm": [str(b / "pypm"), "-q", "lock"],
            "uv": [str(b / "uv"), "lock", "-q"],
            "pip-tools": [str(b / "pip-compile"), "-q", "--generate-hashes", "--strip-extras",
                          "--no-config", "-o", "requirements.txt", "requirements.in"],
            "pdm": [str(b / "pdm"), "lock", "-q"],
            "poetry": [str(b / "poetry"), "lock", "-q"],
        }[self.name]

    def sync(self, root: Path) -> list[list[str]]:
        """Commands that make .venv hold the locked set (several for pip-tools)."""
        b = self.bin
        if self.name == "pip-tools":
            # pip installs into an existing environment; making it is part of its sync. pip-sync
            # needs pip inside the target (ensurepip, seconds), so pip runs from its own venv
            # with --python instead: the fastest way pip offers, hash-checked like the others.
            cmds = []
            if not (root / ".venv").exists():
                cmds.append([str(self.python), "-m", "venv", "--without-pip", ".venv"])
            cmds.append([str(b / "pip"), "--python", ".venv/bin/python", "install", "-q",
                         "--no-deps", "--require-hashes", "-r", "requirements.txt"])
            return cmds
        return [{
            "pypm": [str(b / "pypm"), "-q", "sync"],  # the interpreter: [tool.pypm] python
            "uv": [str(b / "uv"), "sync", "-q"],
            "pdm": [str(b / "pdm"), "sync", "-q"],
            "poetry": [str(b / "poetry"), "sync", "-q", "--no-root"],
        }[self.name]]

    def runs(self) -> dict[str, list[str]]:
        """Variant label -> `TOOL run python -c pass`."""
        b = self.bin
        return {
            "pypm": {"run": [str(b / "pypm"), "run", "--", "python", "-c", "pass"],
                     "run_nosandbox": [str(b / "pypm"), "run", "--no-sandbox", "--",
                                       "python", "-c", "pass"]},
            "uv": {"run": [str(b / "uv"), "run", "-q", "python", "-c", "pass"]},
            "pip-tools": {},  # pip-tools has no run command
            "pdm": {"run": [str(b / "pdm"), "run", "python", "-c", "pass"]},
            "poetry": {"run": [str(b / "poetry"), "run", "python", "-c", "pass"]},
        }[self.name]

    def scripts(self) -> dict[str, list[str]]:
        """Variant label -> `TOOL run bench_script.py` (PEP 723; the tools that run such a script)."""
        b = self.bin
        return {
            "pypm": {"script": [str(b / "pypm"), "run", SCRIPT_NAME],
                     "script_nosandbox": [str(b / "pypm"), "run", "--no-sandbox", SCRIPT_NAME]},
            "uv": {"script": [str(b / "uv"), "run", "-q", SCRIPT_NAME]},
        }.get(self.name, {})

    def tools(self) -> dict[str, list[str]]:
        """Variant label -> `pypm x ruff --version` / `uvx ruff --version` (the `tool` scenario)."""
        b = self.bin
        return {
            "pypm": {"tool": [str(b / "pypm"), "x", *TOOL_COMMAND],
                     "tool_nosandbox": [str(b / "pypm"), "x", "--no-sandbox", *TOOL_COMMAND]},
            "uv": {"tool": [str(b / "uvx"), "-q", *TOOL_COMMAND]},
        }.get(self.name, {})

    def tool_env(self, env: dict[str, str], index_url: str) -> dict[str, str]:
        """`env` with the index as the tool's environment takes it: a tool has no project file to
        name it in, so each tool's own variable for its default index (pypm: PYPM_INDEX_URL; uv:
        UV_DEFAULT_INDEX), the one way a user would give it for every run."""
        return {**env, **({"PYPM_INDEX_URL": index_url} if self.name == "pypm" else
                          {"UV_DEFAULT_INDEX": index_url} if self.name == "uv" else {})}

    def version(self, env: dict[str, str]) -> str:
        exe = {"pypm": "pypm", "uv": "uv", "pip-tools": "pip-compile", "pdm": "pdm",
               "poetry": "poetry"}[self.name]
        out = subprocess.run([str(self.bin / exe), "--version"], env=env, capture_output=True,
                             text=True, cwd=self.home)
        return (out.stdout or out.stderr).strip().splitlines()[0] if (out.stdout or out.stderr) else "?"


def sterile_env(python: Path) -> dict[str, str]:
    """The host environment minus every package-manager setting; the same for every tool."""
    drop = ("PIP_", "UV_", "PDM_", "POETRY_", "PYPM_", "VIRTUAL_ENV", "CONDA_", "PYTHON")
    env = {k: v for k, v in os.environ.items() if not k.startswith(drop)}
    env["PIP_CONFIG_FILE"] = os.devnull
    env["PIP_DISABLE_PIP_VERSION_CHECK"] = "1"
    env["PIP_NO_INPUT"] = "1"
    # The interpreter's own directory first on PATH, so `python` means the same for everyone
    # (and never a pyenv shim, which costs ~50 ms a call).
    env["PATH"] = f"{python.parent}:/usr/local/bin:/usr/bin:/bin"
    return env


def index_url() -> str:
    saved = os.environ.get("PIP_CONFIG_FILE")
    os.environ["PIP_CONFIG_FILE"] = os.devnull
    try:
        from pypm.config import default_index_url

        for k in ("PYPM_INDEX_URL", "PIP_INDEX_URL"):
            os.environ.pop(k, None)
        return default_index_url()
    finally:
        if saved is None:
            os.environ.pop("PIP_CONFIG_FILE", None)
        else:
            os.environ["PIP_CONFIG_FILE"] = saved


def install_peers(workdir: Path, tools: list[str], python: Path, env: dict[str, str],
                  url: str, upgrade: bool, pypm_from: str) -> dict[str, Path]:
    """Each tool in a venv of its own; pypm too (from this working tree, rebuilt every run),
    so nobody pays for the host interpreter's site-packages (.pth files) at start-up."""
    bins: dict[str, Path] = {}
    for tool in tools:
        if tool == "pypm" and pypm_from == "host":
            bins[tool] = Path(sys.executable).parent
            continue
        venv = workdir / "tools" / tool
        stamp = venv / ".bench-installed"
        pip = [str(venv / "bin" / "python"), "-m", "pip", "install", "-q", "--index-url", url]
        if not stamp.exists() or upgrade:
            print(f"installing {tool} into {venv} ...", file=sys.stderr)
            if not (venv / "bin" / "python").exists():
                subprocess.run([str(python), "-m", "venv", str(venv)], check=True, env=env)
            subprocess.run([*pip, "-U", *(PEERS.get(tool) or [str(REPO)])], check=True, env=env)
            stamp.write_text("ok\n")
        elif tool == "pypm":  # dependencies are there; the tree may have changed since
            subprocess.run([*pip, "--no-deps", "--force-reinstall", str(REPO)], check=True, env=env)
        bins[tool] = venv / "bin"
    return bins


# --------------------------------------------------------------------------- measuring

@dataclass
class Sample:
    seconds: float
    peak_mb: float
    ok: bool
    error: str = ""


def measure(argvs: list[list[str]], cwd: Path, env: dict[str, str]) -> Sample:
    """Run the commands one after the other; wall time in total, peak memory of any moment."""
    total = 0.0
    peak = 0
    for argv in argvs:
        t0 = time.perf_counter()
        proc = subprocess.Popen(argv, cwd=cwd, env=env, stdin=subprocess.DEVNULL,
                                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        tree_peak = [0]
        done = threading.Event()

        def poll() -> None:
            try:
                root = psutil.Process(proc.pid)
            except psutil.Error:
                return
            known: dict[int, psutil.Process] = {proc.pid: root}
            while not done.wait(0.01):
                try:
                    tree = [root, *_descendants(root, known)]
                except psutil.Error:
                    return
                tree_peak[0] = max(tree_peak[0], _tree_memory(tree))

        poller = threading.Thread(target=poll, daemon=True)
        poller.start()
        # stderr is drained by a thread so a chatty tool never blocks on a full pipe.
        err_chunks: list[bytes] = []
        stderr = proc.stderr
        assert stderr is not None  # Popen(stderr=PIPE)
        reader = threading.Thread(target=lambda: err_chunks.append(stderr.read()), daemon=True)
        reader.start()
        _, status, usage = os.wait4(proc.pid, 0)
        elapsed = time.perf_counter() - t0
        proc.returncode = os.waitstatus_to_exitcode(status)
        done.set()
        reader.join()
        poller.join()
        total += elapsed
        peak = max(peak, usage.ru_maxrss * 1024, tree_peak[0])
        if proc.returncode != 0:
            err = b"".join(err_chunks).decode(errors="replace").strip()
            return Sample(total, peak / 2**20, False,
                          f"{' '.join(argv[:3])}: exit {proc.returncode}: {err[-800:]}")
    return Sample(total, peak / 2**20, True)


def _descendants(root: psutil.Process, known: dict[int, psutil.Process]) -> list[psutil.Process]:
    """The processes below `root`, from each thread's /proc/PID/task/TID/children.

    Not psutil's `children(recursive=True)`: that reads the stat file of every process on the
    machine to find parents, 0.84 ms of this script's CPU per poll (8% of a core at one poll per
    10 ms, taken from the 2 cores the measured tool runs on), against 0.01 ms here. Falls back to
    psutil where the kernel has no `children` files (CONFIG_PROC_CHILDREN). Process objects are
    kept by pid (`known`) so a poll does not re-read each one's start time."""
    if not os.path.exists(f"/proc/{root.pid}/task/{root.pid}/children"):
        return list(root.children(recursive=True))
    out: list[psutil.Process] = []
    stack = [root.pid]
    while stack:
        pid = stack.pop()
        try:
            tasks = os.listdir(f"/proc/{pid}/task")
        except OSError:
            continue  # it just ended
        for tid in tasks:
            try:
                with open(f"/proc/{pid}/task/{tid}/children", "rb") as f:
                    kids = [int(c) for c in f.read().split()]
            except OSError:
                continue
            for c in kids:
                p = known.get(c)
                if p is None:
                    try:
                        p = known[c] = psutil.Process(c)
                    except psutil.Error:
                        continue
                out.append(p)
                stack.append(c)
    return out


def _tree_memory(tree: list[psutil.Process]) -> int:
    """Bytes a process tree holds: one process's RSS; for several, the sum of their anonymous
    memory plus the file-backed memory of the process with the most.

    Summed RSS counts every file-backed page once per process that maps it: the interpreter and
    its shared libraries (libcrypto, isal) are the same pages in pypm, its download process and
    its extraction worker. pypm's cold sync of the web stack: 80-82 MB of summed RSS, 59-61 MB
    this way, 58-60 MB of summed PSS (proportional set size, from smaps_rollup). PSS is not what
    is polled: reading smaps_rollup walks a process's page tables under its memory-map lock,
    and polling it every 10 ms made that sync ~50 ms slower (0.668 against 0.617 s, 5 rounds);
    these counters (statm, through psutil) cost nothing to read. Anonymous pages a fork shares with
    its parent are still counted in each."""
    if len(tree) == 1:
        try:
            return int(tree[0].memory_info().rss)
        except psutil.Error:
            return 0
    anon = 0
    files = 0
    for p in tree:
        try:
            m = p.memory_info()  # Linux: `shared` is the resident file-backed and shmem pages (statm)
        except psutil.Error:
            continue  # the process just ended
        anon += m.rss - m.shared
        files = max(files, m.shared)
    return anon + files


def wipe_env(root: Path) -> None:
    """The project's environment, whatever form the tool gave it."""
    for name in (".venv", "__pypackages__", ".pdm-python"):
        wipe(root / name)


def wipe(path: Path) -> None:
    if path.is_symlink() or path.is_file():
        path.unlink()
    elif path.exists():
        shutil.rmtree(path)


# --------------------------------------------------------------------------- the scenarios

def prepare(tool: Tool, scenario: str, root: Path, env: dict[str, str]) -> Sample | None:
    """Put the project in the state the scenario starts from (untimed). A failed step -> Sample."""
    lock = tool.lockfile(root)

    def ensure_locked() -> Sample | None:
        if not lock.exists():
            s = measure([tool.lock()], root, env)
            if not s.ok:
                return s
        return None

    def ensure_synced() -> Sample | None:
        bad = ensure_locked()
        if bad:
            return bad
        s = measure(tool.sync(root), root, env)
        return None if s.ok else s

    if scenario == "lock_cold":
        wipe(lock)
        wipe(tool.cache)
    elif scenario == "lock_warm":
        if not lock.exists():
            bad = ensure_locked()  # warms the cache
            if bad:
                return bad
        wipe(lock)
    elif scenario == "lock_noop":
        return ensure_locked()
    elif scenario == "sync_cold":
        bad = ensure_locked()
        wipe(tool.cache)
        wipe_env(root)
        return bad
    elif scenario == "sync_warm":
        bad = ensure_synced()  # the cache holds everything
        wipe_env(root)
        return bad
    elif scenario in ("sync_noop", "run"):
        return ensure_synced()
    return None  # script, tool: its own environment, made by the untimed run before


def timed_command(tool: Tool, scenario: str, variant: str, root: Path) -> list[list[str]]:
    if scenario.startswith("lock"):
        return [tool.lock()]
    if scenario.startswith("sync"):
        return tool.sync(root)
    if scenario == "script":
        return [tool.scripts()[variant]]
    if scenario == "tool":
        return [tool.tools()[variant]]
    return [tool.runs()[variant]]


def summarise(samples: list[Sample]) -> dict[str, Any]:
    ok = [s for s in samples if s.ok]
    if not ok:
        return {"ok": False, "error": samples[-1].error if samples else "not run"}
    secs = [s.seconds for s in ok]
    return {
        "ok": True, "n": len(ok), "failed": len(samples) - len(ok),
        "median": statistics.median(secs), "min": min(secs), "max": max(secs),
        "peak_mb": max(s.peak_mb for s in ok),
    }


def run_benchmark(args: argparse.Namespace) -> dict[str, Any]:
    python = Path(args.python).resolve() if args.python else Path(sys.executable)
    workdir = Path(args.workdir).resolve()
    workdir.mkdir(parents=True, exist_ok=True)
    base_env = sterile_env(python)
    url = index_url()
    tools_wanted = args.tools
    bins = install_peers(workdir, tools_wanted, python, base_env, url, args.upgrade_tools, args.pypm)
    sets = datasets()
    results: dict[str, Any] = {
        "machine": {"platform": platform.platform(), "cpus": os.cpu_count(),
                    "python": str(python), "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())},
        "rounds": args.rounds, "tools": {}, "sets": {},
    }
    tools: dict[str, Tool] = {}
    for name in tools_wanted:
        t = Tool(name, workdir / "home" / name, bins[name], python)
        t.home.mkdir(parents=True, exist_ok=True)
        tools[name] = t
        results["tools"][name] = t.version(t.env(base_env))
    print("tools: " + ", ".join(f"{n} ({v})" for n, v in results["tools"].items()), file=sys.stderr)

    for set_name in args.sets:
        if set_name not in sets:
            print(f"skipping set {set_name}: "
                  + ("no torch CPU wheel in " + str(TORCH_DIR) if set_name == "torch" else "unknown"),
                  file=sys.stderr)
            continue
        ds = sets[set_name]
        rounds = args.rounds if set_name == "canary" else max(1, min(args.rounds, args.big_rounds))
        set_res: dict[str, Any] = {"title": ds.title, "rounds": rounds, "scenarios": {}, "baseline": {}}
        roots: dict[str, Path] = {}
        for name, tool in tools.items():
            root = workdir / "projects" / set_name / name
            wipe_env(root)
            write_project(name, ds, root, url, python)
            roots[name] = root
        bare: list[Sample] = []
        for scenario in args.scenarios:
            if scenario == "script":
                if ds.find_links:  # its wheel is a direct file reference, which a script's block cannot lock
                    print(f"skipping scenario script for set {set_name}: its torch wheel comes from find-links",
                          file=sys.stderr)
                    continue
                for name in tools:
                    write_script(ds, roots[name], url)
            if scenario == "tool" and set_name != "canary":
                print(f"skipping scenario tool for set {set_name}: measured in the canary set only "
                      f"(`{' '.join(TOOL_COMMAND)}` does not depend on the set)", file=sys.stderr)
                continue
            variants = [(n, v) for n, t in tools.items()
                        for v in (t.runs() if scenario == "run" else t.scripts() if scenario == "script"
                                  else t.tools() if scenario == "tool" else [scenario])]
            samples: dict[tuple[str, str], list[Sample]] = {k: [] for k in variants}
            n_rounds = scenario_rounds(scenario, rounds, args.steady_rounds)
            set_res.setdefault("scenario-rounds", {})[scenario] = n_rounds
            for rnd in range(n_rounds):
                for name, variant in variants:  # A B A B ...
                    tool, root = tools[name], roots[name]
                    env = tool.env(base_env)
                    if scenario == "tool":
                        env = tool.tool_env(env, url)
                    bad = prepare(tool, scenario, root, env)
                    if not bad and scenario in ("run", "script", "tool"):
                        # `run` is the steady state of running a command in a synced project (and
                        # `script`, of a script whose environment was made): one untimed run first,
                        # for every tool (pypm's launcher records its plan then; uv and the others
                        # warm their own caches; a script's environment is made).
                        measure(timed_command(tool, scenario, variant, root), root, env)
                    s = bad or measure(timed_command(tool, scenario, variant, root), root, env)
                    if bad:
                        s = Sample(0.0, 0.0, False, "preparing: " + bad.error)
                    samples[(name, variant)].append(s)
                    label = name if variant == scenario else f"{name} {variant}"
                    print(f"[{set_name}] {scenario:10s} round {rnd + 1}/{n_rounds} {label:22s} "
                          + (f"{s.seconds:7.3f}s {s.peak_mb:6.1f} MB" if s.ok else "FAILED: " + s.error[:300]),
                          file=sys.stderr)
                if scenario == "run":
                    venv_py = next((r / ".venv/bin/python" for r in roots.values()
                                    if (r / ".venv/bin/python").exists()), python)
                    bare.append(measure([[str(venv_py), "-c", "pass"]], workdir, base_env))
            for (name, variant), ss in samples.items():
                key = scenario if variant == scenario else variant
                set_res["scenarios"].setdefault(key, {})[name] = {
                    **summarise(ss), "samples": [s.__dict__ for s in ss]}
        if bare:
            set_res["baseline"]["python -c pass"] = summarise(bare)
        results["sets"][set_name] = set_res
    return results


# --------------------------------------------------------------------------- reporting

def _ratio(x: float) -> str:
    return f"{x:.2f}×" if x < 10 else f"{x:.0f}×"


def markdown(results: dict[str, Any]) -> str:
    out = []
    tools = list(results["tools"])
    out.append("Tools: " + ", ".join(f"{n} {v}" for n, v in results["tools"].items()) + ".  ")
    out.append(f"Machine: {results['machine']['platform']}, {results['machine']['cpus']} CPUs; "
               f"{results['machine']['date']}.")
    for sr in results["sets"].values():
        if not sr["scenarios"]:  # (every scenario asked for was skipped for this set, and said why)
            continue
        bare = sr["baseline"].get("python -c pass", {})
        out.append("")
        more = sorted({n for n in sr.get("scenario-rounds", {}).values() if n != sr["rounds"]})
        steady = f" ({', '.join(STEADY_SCENARIOS)}: {more[0]})" if len(more) == 1 else ""
        out.append(f"### {sr['title']}: {sr['rounds']} round(s){steady}; median (min–max), ratio to uv, peak memory")
        out.append("")
        if bare.get("ok"):
            out.append(f"`run` rows: wall time of `TOOL run python -c pass`, and in brackets its overhead "
                       f"over a bare `.venv/bin/python -c pass` ({bare['median'] * 1000:.0f} ms).")
            out.append("")
        if "tool" in sr["scenarios"]:
            out.append(f"`tool` rows: `pypm x {' '.join(TOOL_COMMAND)}` and `uvx {' '.join(TOOL_COMMAND)}`, "
                       "the tool's environment made by an untimed run before.")
            out.append("")
        out.append("| scenario | " + " | ".join(tools) + " |")
        out.append("|---|" + "---|" * len(tools))
        for scenario, per_tool in sr["scenarios"].items():
            is_run = scenario.startswith(("run", "script", "tool"))
            # pypm's unsandboxed run (script) is compared with uv's (only) run (script) too.
            uv = (sr["scenarios"].get(scenario.split("_")[0], {}).get("uv") if is_run else per_tool.get("uv"))
            cells = []
            for t in tools:
                r = per_tool.get(t)
                if r is None:
                    cells.append("–")
                    continue
                if not r.get("ok"):
                    cells.append("failed")
                    continue
                if is_run:
                    cell = f"{r['median'] * 1000:.0f} ms ({r['min'] * 1000:.0f}–{r['max'] * 1000:.0f})"
                    if bare.get("ok") and not scenario.startswith("tool"):  # (a tool is not `python -c pass`)
                        cell += f" [+{(r['median'] - bare['median']) * 1000:.0f}]"
                else:
                    cell = f"{r['median']:.3f} s ({r['min']:.3f}–{r['max']:.3f})"
                if uv and uv.get("ok") and t != "uv":
                    cell += f" **{_ratio(r['median'] / uv['median'])}**"
                cell += f" {r['peak_mb']:.0f} MB"
                cells.append(cell)
            label = scenario.replace("_nosandbox", " (no sandbox)")
            out.append(f"| {label} | " + " | ".join(cells) + " |")
    return "\n".join(out) + "\n"


STEADY_SCENARIOS = ("sync_noop", "run", "script", "tool")


def scenario_rounds(scenario: str, rounds: int, steady_rounds: int) -> int:
    """Rounds of `scenario` in a set measured `rounds` times: the steady-state scenarios get at
    least `steady_rounds` (cheap for every tool, and too short for a sample or two to mean much)."""
    return max(rounds, steady_rounds) if scenario in STEADY_SCENARIOS else rounds


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("-r", "--rounds", type=int, default=2, help="rounds per scenario (default 2; A B A B)")
    p.add_argument("--big-rounds", type=int, default=1,
                   help="at most this many rounds for the web and torch sets (default 1: pip-tools, PDM "
                   "and Poetry take minutes there)")
    p.add_argument("--steady-rounds", type=int, default=7,
                   help="at least this many rounds of sync_noop and run in every set (default 7; "
                   "--quick: 1)")
    p.add_argument("--quick", action="store_true", help="one round: a smoke run")
    p.add_argument("--sets", default="canary,web,torch", help="comma-separated: canary,web,torch")
    p.add_argument("--tools", default=",".join(ALL_TOOLS), help="comma-separated: " + ",".join(ALL_TOOLS))
    p.add_argument("--scenarios", default=",".join(SCENARIOS), help="comma-separated: " + ",".join(SCENARIOS))
    p.add_argument("--python", help="interpreter for every venv (default: the one running this script)")
    p.add_argument("--workdir", default=str(Path.home() / ".cache" / "pypm-bench"),
                   help="tools, caches and projects live here (one filesystem, for hardlinks)")
    p.add_argument("--pypm", choices=["venv", "host"], default="venv",
                   help="venv: install this tree into a venv of its own like the peers (default); "
                   "host: the pypm importable by the interpreter running this script")
    p.add_argument("--upgrade-tools", action="store_true", help="reinstall the peers from the index")
    p.add_argument("-o", "--output", default="bench-results.json", help="JSON results (default %(default)s)")
    p.add_argument("--markdown", default="bench-results.md", help="markdown table (default %(default)s)")
    args = p.parse_args(argv)
    if args.quick:
        args.rounds = 1
        args.steady_rounds = 1
    args.sets = [s for s in args.sets.split(",") if s]
    args.tools = [t for t in args.tools.split(",") if t]
    args.scenarios = [s for s in args.scenarios.split(",") if s]
    for t in args.tools:
        if t not in ALL_TOOLS:
            p.error(f"unknown tool {t!r} (choose from {', '.join(ALL_TOOLS)})")
    for s in args.scenarios:
        if s not in SCENARIOS:
            p.error(f"unknown scenario {s!r} (choose from {', '.join(SCENARIOS)})")
    t0 = time.monotonic()
    results = run_benchmark(args)
    results["elapsed_seconds"] = round(time.monotonic() - t0, 1)
    Path(args.output).write_text(json.dumps(results, indent=2) + "\n")
    md = markdown(results)
    Path(args.markdown).write_text(md)
    print(md)
    print(f"wrote {args.output} and {args.markdown} in {results['elapsed_seconds']:.0f} s", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
