"""What the entry point's fast paths (run, no-op sync) share, importing nothing but `os`.

These run before argparse and the CLI load, so they cannot use `project.find_project_root`
(pathlib) or `selection.Selection` (dataclasses); a test checks that the values here agree
with those modules.
"""

from __future__ import annotations

import os

__all__ = ["DEFAULT_SELECTION", "find_root"]

# venvstate._selection_json(Selection.from_flags()): the selection of a bare `pypm sync`/`pypm run`.
DEFAULT_SELECTION = {"main": True, "extras": [], "groups": ["dev"], "include-project": True}


def find_root(start: str | None = None) -> str | None:
    """The nearest directory at or above `start` (default: the cwd) holding a pyproject.toml."""
    try:
        root = start if start is not None else os.getcwd()  # getcwd is already free of symlinks
    except OSError:
        return None
    while not os.path.isfile(os.path.join(root, "pyproject.toml")):
        parent = os.path.dirname(root)
        if parent == root:
            return None
        root = parent
    return root
