"""Test support: real distributions, a real index server on 127.0.0.1, fetched canary wheels."""

from .dists import build_sdist, build_wheel, wheel_metadata
from .index_server import IndexServer, write_static_index

__all__ = ["build_wheel", "build_sdist", "wheel_metadata", "IndexServer", "write_static_index"]
