"""The version of nlsam (pyproject.toml reads it from here; ``nlsam.__version__`` re-exports it)."""

__all__ = ["DISTRIBUTION", "__version__"]

__version__ = "1.0.0"

#: The name to ``pip install``: ``nlsam`` on the package index is an unrelated project.
DISTRIBUTION = "torch-nlsam"
