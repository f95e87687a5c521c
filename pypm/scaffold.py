"""`pypm init`: write a new PEP 621 pyproject.toml with a [tool.pypm] table."""

from __future__ import annotations

import re
import sys
from pathlib import Path

from .errors import ProjectError
from .lockfile import write_atomic
from .project import PYPROJECT, Project

__all__ = ["init_project", "render_pyproject", "join_workspace"]


def render_pyproject(name: str, requires_python: str = ">=3.9") -> str:
    module = _module(name)
    return f'''[project]
name = "{name}"
version = "0.1.0"
description = ""
requires-python = "{requires_python}"
dependencies = []

[dependency-groups]
dev = []

[tool.pypm]
# index-url = "https://example.invalid/simple"   # default: PYPM_INDEX_URL, then pip's settings
# find-links = []
# plugins = []

[tool.pypm.sandbox]
# `pypm run` and `pypm shell` run in a namespace sandbox; these are its defaults.
enabled = true
network = "none"
writable-project = true
# limits = {{ memory = "4G", cpu = 3600, processes = 1024 }}   # per process; processes: the whole sandbox

# Uncomment to make {name} installable (it is a virtual project until then):
# [build-system]
# requires = ["setuptools>=68"]
# build-backend = "setuptools.build_meta"
# (and put your code in src/{module}/)
'''


# `pypm init --lib/--package --build-backend NAME`: [build-system] of each backend, which all find
# the code in src/<module>/ without configuration.
BACKENDS = {
    "hatchling": (["hatchling"], "hatchling.build"),
    "setuptools": (["setuptools>=68"], "setuptools.build_meta"),
    "flit-core": (["flit_core>=3.4,<4"], "flit_core.buildapi"),
    "pdm-backend": (["pdm-backend"], "pdm.backend"),
}


def _module(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_]", "_", name).lower()


def render_package(name: str, kind: str, backend: str, requires_python: str = ">=3.9") -> str:
    """pyproject.toml of an installable project (`kind` "lib" or "package": a library, or an
    application with a command of its own), built by `backend` from src/<module>/."""
    requires, api = BACKENDS[backend]
    text = render_pyproject(name, requires_python)
    text = text[:text.index("# Uncomment to make")]
    if kind == "package":
        text = text.replace("\n[dependency-groups]", f'\n[project.scripts]\n"{name}" = "{_module(name)}:main"\n\n'
                                                     "[dependency-groups]", 1)
    requires_toml = ", ".join(f'"{r}"' for r in requires)
    return text + f'[build-system]\nrequires = [{requires_toml}]\nbuild-backend = "{api}"\n'


def default_name(directory: Path) -> str:
    """The directory's name, made a valid project name as uv does ("my project" -> my-project)."""
    return re.sub(r"[^A-Za-z0-9._-]+", "-", directory.name).strip("-._") or directory.name


def init_project(directory: Path, name: str | None = None, kind: str | None = None,
                 backend: str = "hatchling", requires_python: str | None = None) -> Path:
    """pyproject.toml of a new project in `directory`: virtual (`kind` None), or a library ("lib")
    or an application with a command ("package") built from src/<module>/, which is made too."""
    target = directory / PYPROJECT
    if target.exists():
        raise ProjectError(f"{target} already exists", hint="edit it, or run `pypm init` in an empty directory")
    name = name if name is not None else default_name(directory)
    if not re.match(r"^([A-Za-z0-9]|[A-Za-z0-9][A-Za-z0-9._-]*[A-Za-z0-9])$", name):
        raise ProjectError(f"{name!r} is not a valid project name", hint="pass --name with letters, digits, - _ or .")
    code = directory / "src" / _module(name)
    if kind is not None and code.exists():
        raise ProjectError(f"{code} already exists", hint="move it away, or write pyproject.toml by hand")
    # Validate first: a refused init leaves no empty directory behind.
    try:
        directory.mkdir(parents=True, exist_ok=True)
    except OSError as e:  # read-only file system, a file in the way, no permission
        raise ProjectError(f"cannot create the directory {directory}: {e.strerror or e}",
                           hint="pick a path in a writable directory") from None
    # requires-python: this interpreter's minor and newer, as uv's init and `pypm init --script`
    # (a fixed old floor made every lock pick releases that still support it: numpy 2.0 on 3.11)
    # (`requires_python`: a workspace's own, for a new member, as uv's)
    floor = requires_python or f">={sys.version_info[0]}.{sys.version_info[1]}"
    if kind is None:
        write_atomic(target, render_pyproject(name, floor))
        return target
    try:
        code.mkdir(parents=True)
        if kind == "lib":
            body = f'"""{name}."""\n\n\ndef hello() -> str:\n    return "Hello from {name}!"\n'
            (code / "py.typed").write_text("")
        else:
            body = f'"""{name}."""\n\n\ndef main() -> None:\n    print("Hello from {name}!")\n'
        (code / "__init__.py").write_text(body, encoding="utf-8")
        write_atomic(target, render_package(name, kind, backend, floor))
    except OSError as e:
        raise ProjectError(f"cannot write {code}: {e.strerror or e}", hint="pick a path in a writable directory") from None
    return target


def join_workspace(workspace: Project, member: Path, name: str) -> str | None:
    """Make the new project at `member` a member of the workspace at `root`, as `uv init` does:
    nothing when a `members` glob already takes it in, or an `exclude` glob leaves it out; else its
    path is added to `members` (tomlkit: the rest of the file as it was). Returns what was done,
    for the message; raises before any write when the workspace has a member of that name."""
    import os

    import tomlkit

    from .lockfile import canonical_name
    from .pathdeps import workspace_members

    root = workspace.root
    member = member.resolve()
    rel = Path(os.path.relpath(member, root.resolve())).as_posix()
    members = workspace_members(workspace)
    if rel in members.values():
        return f"a member of the workspace at {root} (its `members` take {rel} in)"
    if any(member == d.resolve() for g in workspace.tool.workspace_exclude for d in root.glob(g)):
        return None
    other = members.get(canonical_name(name))
    if other is not None:
        raise ProjectError(f"the workspace at {root} has a member named {canonical_name(name)} already ({other})",
                           hint="pass another --name, or --no-workspace")
    path = root / PYPROJECT
    doc = tomlkit.parse(path.read_text(encoding="utf-8"))
    array = doc["tool"]["pypm"]["workspace"]["members"]  # (load_project checked the shape)
    array.append(rel)
    write_atomic(path, tomlkit.dumps(doc))
    return f"added {rel} to [tool.pypm.workspace] members in {path}"


def init_script(path: Path, python: str | None = None) -> Path:
    """`pypm init --script FILE`: a new Python file that starts with a PEP 723 `# /// script`
    block (requires-python, no dependencies yet) and a `main`; `pypm add --script FILE NAME`
    then fills the block, `pypm run FILE` runs it. Never overwrites."""
    import sys

    if path.exists():
        raise ProjectError(f"{path} already exists", hint="`pypm add --script` adds a block to an existing script")
    if python is not None and not re.fullmatch(r"3\.\d+", python):
        raise ProjectError(f"--python {python!r}: give a minor version such as 3.12 for the script's requires-python")
    floor = python or f"{sys.version_info[0]}.{sys.version_info[1]}"
    text = (f'# /// script\n# requires-python = ">={floor}"\n# dependencies = []\n# ///\n\n\n'
            f'def main() -> None:\n    print("Hello from {path.name}!")\n\n\nif __name__ == "__main__":\n    main()\n')
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise ProjectError(f"cannot create the directory {path.parent}: {e.strerror or e}") from None
    write_atomic(path, text)
    return path
