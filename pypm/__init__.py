"""pypm: a Python package and project manager with hermetic, namespace-sandboxed runs."""

__version__ = "0.1.0"
__all__ = ["__version__"]
