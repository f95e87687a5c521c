"""The `pypm` command line: help and exit codes, `init`, error printing, and docs/cli.md coverage."""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from pypm import __version__
from pypm.cli import build_parser, main
from pypm.errors import ExitCode
from pypm.project import load_project

DOCS = Path(__file__).resolve().parents[1] / "docs" / "cli.md"


def subparsers() -> dict[str, argparse.ArgumentParser]:
    parser = build_parser()
    (action,) = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    return dict(action.choices)


def exit_codes() -> dict[str, int]:
    return {k: v for k, v in vars(ExitCode).items() if k.isupper()}


def pypm(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, PIP_CONFIG_FILE=os.devnull)
    return subprocess.run([sys.executable, "-m", "pypm", *args], capture_output=True, text=True, cwd=cwd, env=env,
                          timeout=60)


# --------------------------------------------------------------------------- help

def test_help_lists_every_command_and_every_exit_code() -> None:
    r = pypm("--help")
    assert r.returncode == 0
    for name in subparsers():
        assert re.search(rf"^\s+{re.escape(name)}\s", r.stdout, re.M), f"`pypm --help` does not list {name}"
    for name, code in exit_codes().items():
        assert re.search(rf"^\s+{code}\s+\S", r.stdout, re.M), f"`pypm --help` does not document exit code {code} ({name})"


@pytest.mark.parametrize("command", sorted(subparsers()))
def test_every_command_has_help_with_exit_codes(command: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as e:
        main([command, "--help"])
    assert e.value.code == 0
    out = capsys.readouterr().out
    assert out.startswith(f"usage: pypm {command}") and "exit codes:" in out
    for action in subparsers()[command]._actions:
        if action.option_strings and action.dest != "help":
            assert action.help, f"`pypm {command} {action.option_strings[0]}` has no help text"


def test_no_command_prints_help_and_exits_2(capsys: pytest.CaptureFixture[str]) -> None:
    assert main([]) == ExitCode.USAGE
    assert "usage: pypm" in capsys.readouterr().out


def test_bad_flag_exits_2() -> None:
    r = pypm("lock", "--no-such-flag")
    assert r.returncode == ExitCode.USAGE and "unrecognized arguments: --no-such-flag" in r.stderr
    r = pypm("export", "--format", "poetry.lock")
    assert r.returncode == ExitCode.USAGE and "invalid choice" in r.stderr


def test_version() -> None:
    r = pypm("--version")
    assert r.returncode == 0 and r.stdout.strip() == f"pypm {__version__}"


# --------------------------------------------------------------------------- init

def test_init_creates_a_valid_project_and_refuses_to_overwrite(tmp_path: Path) -> None:
    target = tmp_path / "my-proj"
    r = pypm("init", str(target))
    assert r.returncode == 0, r.stderr
    assert f"created {target / 'pyproject.toml'}" in r.stderr
    project = load_project(target)
    assert project.name == "my-proj" and project.is_virtual and project.dependency_groups == {"dev": ()}
    before = (target / "pyproject.toml").read_bytes()
    r = pypm("init", str(target), "--name", "other")
    assert r.returncode == ExitCode.PROJECT
    assert "already exists" in r.stderr and "hint:" in r.stderr and "Traceback" not in r.stderr
    assert (target / "pyproject.toml").read_bytes() == before


def test_init_with_directory_flag_and_name(tmp_path: Path) -> None:
    r = pypm("-C", str(tmp_path), "init", "--name", "Fancy.Name")
    assert r.returncode == 0, r.stderr
    assert load_project(tmp_path).name == "Fancy.Name"


def test_init_makes_a_valid_name_of_the_directory_s(tmp_path: Path) -> None:
    r = pypm("init", str(tmp_path / "my project (v2)"))
    assert r.returncode == 0, r.stderr
    assert load_project(tmp_path / "my project (v2)").name == "my-project-v2"


def test_init_rejects_a_bad_name_and_writes_nothing(tmp_path: Path) -> None:
    r = pypm("init", str(tmp_path / "x"), "--name", "bad name!")
    assert r.returncode == ExitCode.PROJECT and "'bad name!' is not a valid project name" in r.stderr
    assert not (tmp_path / "x" / "pyproject.toml").exists()


def test_init_flags_that_do_not_go_together_are_refused(tmp_path: Path) -> None:
    r = pypm("init", str(tmp_path / "a"), "--build-backend", "setuptools")
    assert r.returncode == 2 and "--build-backend goes with --lib or --package" in r.stderr, r.stderr
    r = pypm("init", str(tmp_path / "b"), "--lib", "--package")
    assert r.returncode == 2 and "not allowed with argument" in r.stderr, r.stderr
    r = pypm("-C", str(tmp_path), "init", "--script", "s.py", "--lib")
    assert r.returncode == 2 and "--lib does not apply" in r.stderr, r.stderr
    assert not any(tmp_path.iterdir())


def test_quiet_silences_info(tmp_path: Path) -> None:
    r = pypm("-q", "init", str(tmp_path))
    assert r.returncode == 0 and r.stderr == ""


# --------------------------------------------------------------------------- errors

def test_errors_print_one_paragraph_without_traceback(tmp_path: Path) -> None:
    (tmp_path / "pyproject.toml").write_text('[project]\nname = "x"\nversion = "1"\ndependencies = [\n  "ok",\n  bad\n]\n')
    r = pypm("-C", str(tmp_path), "export")
    assert r.returncode == ExitCode.PROJECT
    assert r.stderr.startswith(f"error: {tmp_path / 'pyproject.toml'}:6:") and "invalid TOML" in r.stderr
    assert "hint:" in r.stderr and "Traceback" not in r.stderr
    r = pypm("-v", "-C", str(tmp_path), "export")
    assert r.returncode == ExitCode.PROJECT and "Traceback" in r.stderr


def test_invalid_requirement_is_quoted_back(tmp_path: Path) -> None:
    (tmp_path / "pyproject.toml").write_text('[project]\nname = "x"\nversion = "1"\ndependencies = ["requests >== 2"]\n')
    r = pypm("-C", str(tmp_path), "export")
    assert r.returncode == ExitCode.PROJECT and "'requests >== 2'" in r.stderr and "Traceback" not in r.stderr


def test_no_project_found(tmp_path: Path) -> None:
    if any((d / "pyproject.toml").exists() for d in tmp_path.parents):
        pytest.skip(f"a pyproject.toml exists above {tmp_path}")
    r = pypm("-C", str(tmp_path), "export")
    assert r.returncode == ExitCode.PROJECT and "no pyproject.toml found" in r.stderr and "pypm init" in r.stderr


# --------------------------------------------------------------------------- docs/cli.md

def test_docs_cli_documents_every_command_option_and_exit_code() -> None:
    text = DOCS.read_text(encoding="utf-8")
    # Each option must be in its own command's section (a section that says it accepts another
    # command's options, by linking to it, may rely on that section), not just anywhere in the file.
    sections = {m.group(1): m.group(0) for m in re.finditer(r"^## `pypm ([a-z-]+)`.*?(?=^## |\Z)", text, re.M | re.S)}
    missing = []
    for name, sp in subparsers().items():
        if name not in sections:
            missing.append(f"section for `pypm {name}`")
            continue
        section = sections[name]
        section += "".join(sections.get(other, "") for other in re.findall(r"\(#pypm-([a-z-]+)\)", section))
        nested = [a for a in sp._actions if isinstance(a, argparse._SubParsersAction)]  # `pypm tool install`, ...
        for action in [*sp._actions, *(x for n in nested for c in n.choices.values() for x in c._actions)]:
            if action.help == argparse.SUPPRESS:  # -v/-q accepted after the command too: global options
                continue
            for opt in action.option_strings:
                if opt.startswith("--") and opt != "--help" and f"`{opt}" not in section:
                    missing.append(f"pypm {name} {opt} (in its section)")
    for opt in ("--directory", "--verbose", "--quiet", "--version"):
        if f"`{opt}" not in text:
            missing.append(opt)
    for code in exit_codes().values():
        if not re.search(rf"^\|\s*{code}\s*\|", text, re.M):
            missing.append(f"exit code {code}")
    assert not missing, "docs/cli.md lacks: " + ", ".join(missing)


# --------------------------------------------------------------------------- values from the environment and flags

@pytest.mark.parametrize("value,offline", [("1", True), ("yes", True), ("TRUE", True), ("on", True),
                                           ("", False), ("0", False), ("no", False), ("Off", False)])
def test_pypm_offline_takes_the_usual_spellings_of_yes_and_no(value: str, offline: bool,
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PYPM_OFFLINE", value)
    for command in ("sync", "lock"):
        assert build_parser().parse_args([command]).offline is offline


def test_pypm_offline_with_another_value_is_refused_naming_the_variable(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    # PYPM_OFFLINE=yes used to be read as "not offline": only "1" counted. (-C an empty directory:
    # should the check ever go, this must not sync whatever project the tests run in.)
    monkeypatch.setenv("PYPM_OFFLINE", "maybe")
    assert main(["-C", str(tmp_path), "sync"]) == ExitCode.USAGE
    err = capsys.readouterr().err
    assert "PYPM_OFFLINE='maybe' is neither yes nor no" in err and "hint: set PYPM_OFFLINE=1" in err
    assert "Traceback" not in err


@pytest.mark.parametrize("argv", [["sync", "--python", ""], ["lock", "--exclude-newer", ""],
                                  ["lock", "--index-url", " "], ["sync", "--extra", ""],
                                  ["run", "--env", "", "--", "true"], ["-C", "", "sync"]])
def test_an_empty_flag_value_is_refused_not_taken_as_unset(argv: list[str],
                                                           capsys: pytest.CaptureFixture[str]) -> None:
    # `--python "$PY"` with PY unset used to pick an interpreter as if the flag were not given
    flag = next(a for a in argv if a.startswith("-"))
    with pytest.raises(SystemExit) as exc:
        build_parser().parse_args(argv)
    assert exc.value.code == ExitCode.USAGE
    err = capsys.readouterr().err
    assert f"argument {flag}" in err and "the value is empty" in err


@pytest.mark.parametrize("command", [["run", "--", "python", "-c", "pass"], ["run", "script.py"], ["x", "ruff"],
                                     ["lock"], ["lock", "--check"], ["sync"], ["add", "requests"], ["tree"]])
def test_a_current_directory_removed_under_the_shell_is_a_clear_error(tmp_path: Path, command: list[str]) -> None:
    """`cd build && rm -rf ../build && pypm ...`: exit 2 naming the problem and the fix, from the
    fast paths and the CLI alike, never a traceback."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYPM_")}
    env["PYPM_CACHE_DIR"] = str(tmp_path / "cache")
    r = subprocess.run(["sh", "-c", 'mkdir gone && cd gone && rmdir ../gone && exec "$0" -m pypm "$@"',
                        sys.executable, *command], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60)
    assert r.returncode == 2, r.stderr
    assert "the current directory cannot be read" in r.stderr and "cd into an existing directory" in r.stderr
    assert "Traceback" not in r.stderr
