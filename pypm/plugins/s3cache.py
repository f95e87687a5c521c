"""The `s3cache` plugin: a shared, content-addressed wheel cache in an S3-compatible bucket."""

from __future__ import annotations

from typing import Any

__all__ = ["plugin"]


class S3CachePlugin:
    def post_sync(self, ctx: Any) -> int:
        return 0


plugin = S3CachePlugin()
