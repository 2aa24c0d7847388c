"""Provenance every stored result carries: the versions of the packages that computed it and
the sha256 of the files it came from."""

from __future__ import annotations

import hashlib
import sys
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

PACKAGES = ("icl-workbench", "torch", "transformer-lens", "transformers", "numpy", "pandas",
            "pyarrow", "duckdb", "safetensors")


def package_versions() -> dict[str, str]:
    """Installed versions of ``PACKAGES`` (missing ones left out) and of Python."""
    out = {}
    for pkg in PACKAGES:
        try:
            out[pkg] = version(pkg)
        except PackageNotFoundError:
            pass
    out["python"] = ".".join(map(str, sys.version_info[:3]))
    return out


def file_sha256(path: str | Path) -> str:
    """sha256 of a file's bytes (read in 1 MiB chunks)."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()
