"""The installed version of robustclip (or of any package), read in this one place from the package metadata."""

from __future__ import annotations


def version(dist: str = "robustclip") -> str:
    """The installed version of the distribution ``dist`` (pyproject.toml's for robustclip); "unknown" without
    metadata (a bare source tree on ``PYTHONPATH``)."""
    from importlib.metadata import PackageNotFoundError
    from importlib.metadata import version as _metadata_version

    try:
        return _metadata_version(dist)
    except (PackageNotFoundError, ValueError):
        return "unknown"
