"""my-lib: pypm's canary project."""

__version__ = "0.1.0"
