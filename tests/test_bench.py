"""scripts/bench.py: the parts that decide whether its numbers are fair (no network here)."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
import time
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("pypm_bench", ROOT / "scripts" / "bench.py")
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    sys.modules["pypm_bench"] = mod  # dataclasses look their module up
    spec.loader.exec_module(mod)
    yield mod
    sys.modules.pop("pypm_bench", None)


def test_sterile_env_drops_every_package_manager_setting(bench, monkeypatch) -> None:
    for k, v in {"PIP_FIND_LINKS": "/opt/wheels", "PIP_EXTRA_INDEX_URL": "file:///x", "UV_INDEX_URL": "http://x",
                 "PDM_PYTHON": "/x", "POETRY_REPOSITORIES_X_URL": "http://x", "PYPM_INDEX_URL": "http://x",
                 "VIRTUAL_ENV": "/x"}.items():
        monkeypatch.setenv(k, v)
    env = bench.sterile_env(Path(sys.executable))
    assert env["PIP_CONFIG_FILE"] == "/dev/null"
    leaked = [k for k in env if k.startswith(("UV_", "PDM_", "POETRY_", "PYPM_", "VIRTUAL_ENV"))
              or (k.startswith("PIP_") and k not in ("PIP_CONFIG_FILE", "PIP_DISABLE_PIP_VERSION_CHECK",
                                                       "PIP_NO_INPUT"))]
    assert leaked == []
    assert env["PATH"].split(":")[0] == str(Path(sys.executable).parent)


@pytest.mark.parametrize("tool", ["pypm", "uv", "pdm", "poetry"])
@pytest.mark.parametrize("set_name", ["canary", "web", "torch"])
def test_every_tool_gets_the_same_project_and_index(bench, tool, set_name, tmp_path, monkeypatch) -> None:
    sets = bench.datasets()
    if set_name == "torch" and "torch" not in sets:
        monkeypatch.setattr(bench, "torch_wheel", lambda: Path("/w/torch-2.13.0+cpu-cp311-cp311-linux_x86_64.whl"))
        sets = bench.datasets()
    ds = sets[set_name]
    url = "http://127.0.0.1:9/simple/"
    bench.write_project(tool, ds, tmp_path, url, Path("/usr/bin/python3"))
    doc = tomllib.loads((tmp_path / "pyproject.toml").read_text())
    assert "build-system" not in doc  # virtual: no build backend in the numbers
    assert doc["project"]["requires-python"] == ds.requires_python
    assert len(doc["project"]["dependencies"]) == len(ds.dependencies)
    t = doc.get("tool", {})
    if tool == "pypm":
        assert t["pypm"]["index-url"] == url and t["pypm"]["python"] == "/usr/bin/python3"
        assert ("find-links" in t["pypm"]) == ds.find_links
    elif tool == "uv":
        assert t["uv"]["package"] is False
        assert [i["url"] for i in t["uv"]["index"] if i.get("default")] == [url]
        if ds.find_links:
            assert t["uv"]["sources"]["torch"] == {"index": "wheels"}
    elif tool == "pdm":
        assert t["pdm"]["distribution"] is False
        assert t["pdm"]["source"][0] == {"name": "pypi", "url": url}
    elif tool == "poetry":
        assert t["poetry"]["package-mode"] is False
        assert t["poetry"]["source"] == [{"name": "bench", "url": url, "priority": "primary"}]
        assert len(t["poetry"].get("group", {}).get("dev", {}).get("dependencies", {})) == len(ds.dev)
    if tool != "poetry" and ds.dev:
        assert doc["dependency-groups"]["dev"] == ds.dev


def test_pip_tools_gets_a_requirements_in(bench, tmp_path) -> None:
    ds = bench.datasets()["canary"]
    bench.write_project("pip-tools", ds, tmp_path, "http://127.0.0.1:9/simple/", Path(sys.executable))
    lines = (tmp_path / "requirements.in").read_text().splitlines()
    assert lines == ds.dependencies + ds.dev


def test_measure_sees_peak_memory_and_failures(bench, tmp_path) -> None:
    env = bench.sterile_env(Path(sys.executable))
    s = bench.measure([[sys.executable, "-c", "import time; b = bytearray(80 << 20); time.sleep(0.1)"]], tmp_path, env)
    assert s.ok and s.peak_mb >= 80 and s.seconds >= 0.1
    bad = bench.measure([[sys.executable, "-c", "import sys; sys.exit('boom')"]], tmp_path, env)
    assert not bad.ok and "exit 1" in bad.error and "boom" in bad.error


def test_a_tree_counts_the_files_its_processes_share_once(bench, tmp_path) -> None:
    """An 80 MB file mapped and read by a process and by its fork: the tree holds ~80 MB of it,
    which summed RSS counts twice. Measured on the tree directly: `measure` also takes the
    process's ru_maxrss, which the kernel starts at the launcher's own RSS (this test process's,
    large after the rest of the suite), so it cannot bound the peak from above."""
    import psutil

    data = tmp_path / "data"
    data.write_bytes(os.urandom(80 << 20))
    ready = tmp_path / "forked"
    code = ("import mmap, os, time\n"
            f"f = open({str(data)!r}, 'rb')\nm = mmap.mmap(f.fileno(), 0, prot=mmap.PROT_READ)\n"
            "def touch():\n    return sum(m[i] for i in range(0, len(m), 4096))\n"
            "touch()\npid = os.fork()\ntouch()\n"
            f"open({str(ready)!r} + str(os.getpid()), 'w').close()\ntime.sleep(30)\n")
    proc = subprocess.Popen([sys.executable, "-c", code])
    try:
        deadline = time.monotonic() + 30
        while len(list(tmp_path.glob("forked*"))) < 2 and time.monotonic() < deadline:
            time.sleep(0.01)
        root = psutil.Process(proc.pid)
        tree = [root, *root.children(recursive=True)]
        assert len(tree) == 2
        rss = sum(p.memory_info().rss for p in tree) / 2**20
        held = bench._tree_memory(tree) / 2**20
        assert rss >= 160 and 80 <= held < 120, (rss, held)
        assert bench._tree_memory([root]) == root.memory_info().rss  # one process: its RSS
    finally:
        for p in psutil.Process(proc.pid).children(recursive=True):
            p.kill()
        proc.kill()
        proc.wait()


def test_the_poller_finds_every_descendant_also_those_a_thread_started(bench, tmp_path) -> None:
    """`_descendants` reads each thread's /proc children file (psutil's scan of every process
    was 8% of a core at the poll rate): a child started from a non-main thread, and that
    child's own child, are found, the same set psutil finds."""
    import psutil

    code = ("import subprocess, sys, threading, time\n"
            "def spawn():\n"
            "    subprocess.Popen([sys.executable, '-c', "
            "'import subprocess, sys, time; subprocess.Popen([sys.executable, \"-c\", \"import time; time.sleep(30)\"]); "
            "time.sleep(30)'])\n"
            "    time.sleep(30)  # alive: a thread's children move to another thread when it ends\n"
            "threading.Thread(target=spawn, daemon=True).start()\n"
            "time.sleep(30)\n")
    proc = subprocess.Popen([sys.executable, "-c", code])
    try:
        root = psutil.Process(proc.pid)
        deadline = time.monotonic() + 30
        while len(root.children(recursive=True)) < 2 and time.monotonic() < deadline:
            time.sleep(0.01)
        known: dict = {}
        found = {p.pid for p in bench._descendants(root, known)}
        assert len(found) == 2 and found == {p.pid for p in root.children(recursive=True)}
        assert set(known) == found  # kept for the next poll
        assert {p.pid for p in bench._descendants(root, known)} == found
    finally:
        for p in psutil.Process(proc.pid).children(recursive=True):
            p.kill()
        proc.kill()
        proc.wait()


def test_markdown_gives_ratios_to_uv_and_run_overheads(bench) -> None:
    def cell(med, mb=10.0):
        return {"ok": True, "n": 1, "failed": 0, "median": med, "min": med, "max": med, "peak_mb": mb}

    results = {
        "tools": {"pypm": "pypm 0.1", "uv": "uv 0.13"}, "machine": {"platform": "linux", "cpus": 2, "date": "d"},
        "sets": {"canary": {"title": "canary", "rounds": 1, "baseline": {"python -c pass": cell(0.010)},
                            "scenarios": {"sync_warm": {"pypm": cell(0.30), "uv": cell(0.10)},
                                          "run": {"pypm": cell(0.060), "uv": cell(0.030)},
                                          "run_nosandbox": {"pypm": cell(0.045)}}}},
    }
    md = bench.markdown(results)
    assert "| sync_warm | 0.300 s (0.300–0.300) **3.00×** 10 MB | 0.100 s (0.100–0.100) 10 MB |" in md
    assert "| run | 60 ms (60–60) [+50] **2.00×** 10 MB |" in md
    assert "| run (no sandbox) | 45 ms (45–45) [+35] **1.50×** 10 MB | – |" in md


def test_the_script_scenario_writes_one_script_every_tool_reads_and_compares_with_uvs(bench, tmp_path) -> None:
    """`script`: a PEP 723 script needing the set's dependencies, with the index in pypm's and uv's
    words; its rows are compared with uv's script row (not its run row)."""
    from pypm.script import script_metadata

    ds = bench.datasets()["canary"]
    bench.write_script(ds, tmp_path, "https://index.example/simple/")
    meta = script_metadata(tmp_path / bench.SCRIPT_NAME)  # validated as pypm validates it
    assert meta is not None
    assert meta["dependencies"] == list(ds.dependencies)
    assert meta["tool"]["pypm"] == {"index-url": "https://index.example/simple/"}
    assert meta["tool"]["uv"]["index"] == [{"name": "bench", "url": "https://index.example/simple/", "default": True}]

    def cell(med):
        return {"ok": True, "n": 1, "failed": 0, "median": med, "min": med, "max": med, "peak_mb": 10.0}

    results = {
        "tools": {"pypm": "pypm 0.1", "uv": "uv 0.13"}, "machine": {"platform": "linux", "cpus": 2, "date": "d"},
        "sets": {"canary": {"title": "canary", "rounds": 1, "baseline": {"python -c pass": cell(0.010)},
                            "scenarios": {"run": {"pypm": cell(0.020), "uv": cell(0.030)},
                                          "script": {"pypm": cell(0.036), "uv": cell(0.045)},
                                          "script_nosandbox": {"pypm": cell(0.033)}}}},
    }
    md = bench.markdown(results)
    assert "| script | 36 ms (36–36) [+26] **0.80×** 10 MB | 45 ms (45–45) [+35] 10 MB |" in md
    assert "| script (no sandbox) | 33 ms (33–33) [+23] **0.73×** 10 MB | – |" in md


def test_steady_state_scenarios_get_more_rounds_and_the_table_says_so(bench, monkeypatch) -> None:
    """sync_noop and run get at least --steady-rounds in every set (a 20 ms command's one or two
    samples swing by a quarter); the others keep the set's rounds; --quick keeps one of each."""
    assert bench.scenario_rounds("run", 1, 7) == 7
    assert bench.scenario_rounds("sync_noop", 2, 7) == 7
    assert bench.scenario_rounds("run", 9, 7) == 9  # never fewer than asked for
    assert bench.scenario_rounds("sync_cold", 1, 7) == 1
    assert bench.scenario_rounds("lock_noop", 2, 7) == 2  # minutes for the peers on the web stack
    cell = {"ok": True, "n": 1, "failed": 0, "median": 0.1, "min": 0.1, "max": 0.1, "peak_mb": 1.0}
    results = {
        "tools": {"pypm": "pypm 0.1", "uv": "uv 0.13"}, "machine": {"platform": "linux", "cpus": 2, "date": "d"},
        "sets": {"web": {"title": "web", "rounds": 1, "baseline": {}, "scenario-rounds": {"sync_cold": 1, "run": 7},
                         "scenarios": {"sync_cold": {"pypm": cell, "uv": cell}}}},
    }
    assert "### web: 1 round(s) (sync_noop, run, script, tool: 7); median" in bench.markdown(results)
    # The option as main() parses it (the benchmark itself is not run: it takes minutes).
    parsed: dict[str, object] = {}

    def options_only(args):  # noqa: ANN001, ANN202
        parsed.update(vars(args))
        return {"sets": {}, "tools": {}, "machine": {"platform": "", "cpus": 1, "date": ""}}

    monkeypatch.setattr(bench, "run_benchmark", options_only)
    for argv, want in (([], 7), (["--quick"], 1), (["--steady-rounds", "3"], 3)):
        parsed.clear()
        bench.main([*argv, "-o", os.devnull, "--markdown", os.devnull])
        assert parsed["steady_rounds"] == want, (argv, parsed)


def test_the_tool_scenario_runs_pypm_x_and_uvx_on_the_same_index(bench, tmp_path) -> None:
    """`tool`: `pypm x ruff --version` (sandboxed and not) and `uvx ruff --version`, each given the
    index by its own default-index variable; the rows are compared with uv's, without the
    `python -c pass` overhead (a tool is not that)."""
    pypm = bench.Tool("pypm", tmp_path / "h", tmp_path / "bin", Path(sys.executable))
    uv = bench.Tool("uv", tmp_path / "h", tmp_path / "bin", Path(sys.executable))
    assert pypm.tools() == {"tool": [str(tmp_path / "bin" / "pypm"), "x", "ruff", "--version"],
                            "tool_nosandbox": [str(tmp_path / "bin" / "pypm"), "x", "--no-sandbox", "ruff", "--version"]}
    assert uv.tools() == {"tool": [str(tmp_path / "bin" / "uvx"), "-q", "ruff", "--version"]}
    assert bench.Tool("pdm", tmp_path / "h", tmp_path / "bin", Path(sys.executable)).tools() == {}
    url = "http://127.0.0.1:9/simple/"
    assert pypm.tool_env({"A": "1"}, url) == {"A": "1", "PYPM_INDEX_URL": url}
    assert uv.tool_env({"A": "1"}, url) == {"A": "1", "UV_DEFAULT_INDEX": url}

    def cell(median: float) -> dict:
        return {"ok": True, "n": 1, "failed": 0, "median": median, "min": median, "max": median, "peak_mb": 10.0}

    results = {"tools": {"pypm": "p", "uv": "u"}, "machine": {"platform": "x", "cpus": 2, "date": "d"},
               "sets": {"canary": {"title": "canary", "rounds": 1, "baseline": {"python -c pass": cell(0.010)},
                                   "scenarios": {"tool": {"pypm": cell(0.021), "uv": cell(0.168)},
                                                 "tool_nosandbox": {"pypm": cell(0.019)}}}}}
    md = bench.markdown(results)
    assert "| tool | 21 ms (21–21) **0.12×** 10 MB | 168 ms (168–168) 10 MB |" in md
    assert "| tool (no sandbox) | 19 ms (19–19) **0.11×** 10 MB | – |" in md
    assert "`tool` rows: `pypm x ruff --version` and `uvx ruff --version`" in md
