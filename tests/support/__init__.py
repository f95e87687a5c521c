"""Test support: real distributions, a real index server on 127.0.0.1, fetched canary wheels."""

from .dists import DistFactory, build_sdist, build_wheel, sdist_metadata, wheel_metadata
from .fixtures import canary_wheels_dir
from .index_server import IndexServer, write_static_index

__all__ = [
    "DistFactory",
    "build_wheel",
    "build_sdist",
    "wheel_metadata",
    "sdist_metadata",
    "IndexServer",
    "write_static_index",
    "canary_wheels_dir",
]
