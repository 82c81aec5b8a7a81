"""The version of nlsam (pyproject.toml reads it from here; ``nlsam.__version__`` re-exports it)."""

__version__ = "0.1.0"
