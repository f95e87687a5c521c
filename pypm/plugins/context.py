"""The context a Python plugin's hook receives (the native twin is `struct pypm_context`)."""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Mapping

if TYPE_CHECKING:  # pragma: no cover
    from ..project import Project
    from . import PackageInfo

__all__ = ["HookContext"]


@dataclass
class HookContext:
    """What a hook knows: the stage, where things are, the plan, its config, and `report`."""

    stage: str  # one of pypm.plugins.STAGES, or "fetch" inside fetch_wheel
    plugin_name: str
    project_root: Path
    venv: Path | None
    lock_path: Path | None
    interpreter: Path | None
    packages: tuple["PackageInfo", ...]
    config: Mapping[str, Any]  # the [tool.pypm.<plugin_name>] table ({} when absent)
    project: "Project | None" = None
    quiet: bool = False  # `pypm -q`: keep the messages (a failure's reason) but print none
    messages: list[str] = field(default_factory=list)

    def report(self, message: str) -> None:
        """Tell the user something, prefixed with the plugin's name. The last message reported
        before a failure becomes the reason in pypm's error (printed even with -q)."""
        self.messages.append(message)
        if not self.quiet:
            print(f"{self.plugin_name}: {message}", file=sys.stderr, flush=True)
