"""A unit file's integrity: the whole-file checksum sealed into its Parquet metadata, the
artefact's sha256, and the check that says whether a stored unit file is sound (see
``experiments.runs.store`` for the format)."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import pyarrow.parquet as pq

from experiments.runs.config import Unit
from probes.provenance import file_sha256

_ARTEFACT_SHA: dict[str, tuple[tuple, str]] = {}


def _artefact_sha256(path: Path) -> str:
    """sha256 of an artefact file, cached per (inode, size, mtime, ctime): artefacts can be large."""
    st = path.stat()
    sig = (st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)
    hit = _ARTEFACT_SHA.get(str(path))
    if hit is None or hit[0] != sig:
        hit = (sig, file_sha256(path))
        _ARTEFACT_SHA[str(path)] = hit
    return hit[1]


CHECKSUM_MARK = b"iclwb-sha256:"
"""Prefix of the ``iclwb.checksum`` metadata value: the 64 hex digits that follow it are the
sha256 of the whole file with those digits read as zeros."""


def sealed_checksum(data: bytes) -> tuple[str | None, str]:
    """(the checksum a unit file's bytes record (None when they hold none), the checksum of those
    bytes); equal for an intact file."""
    i = data.rfind(CHECKSUM_MARK)
    if i < 0:
        return None, ""
    j = i + len(CHECKSUM_MARK)
    stored = data[j:j + 64].decode("ascii", errors="replace")
    return stored, hashlib.sha256(data[:j] + b"0" * 64 + data[j + 64:]).hexdigest()


def seal(path: Path) -> None:
    """Write the sha256 of the unit file at ``path`` in place of the zeros after its
    ``CHECKSUM_MARK`` (the file must hold the mark followed by 64 zeros)."""
    with open(path, "rb+") as f:
        data = f.read()
        _, digest = sealed_checksum(data)
        f.seek(data.rfind(CHECKSUM_MARK) + len(CHECKSUM_MARK))
        f.write(digest.encode())
        f.flush()
        os.fsync(f.fileno())


def check_unit_file(key: str, path: Path, art: Path) -> str | None:
    """None when the unit file at ``path`` (with its artefact file ``art``) is sound and holds
    unit ``key``, else what is wrong (one phrase)."""
    try:
        data = path.read_bytes()
    except OSError as err:
        return f"unreadable: {err.strerror}"
    stored, actual = sealed_checksum(data)
    if stored is not None and stored != actual:
        return "checksum mismatch (the file changed after it was written: truncated or overwritten)"
    try:
        meta = pq.read_schema(path).metadata or {}
        prov = json.loads(meta.get(b"iclwb.provenance", b"{}"))
        stored_key = Unit.from_dict(json.loads(meta[b"iclwb.unit"])).key
        if stored is None:
            pq.read_table(path)  # format 1 (no checksum): readable is all that can be checked
    except KeyError:
        return "not a unit file (no iclwb.unit metadata)"
    except Exception as err:  # any reading error is damage
        msg = str(err).replace(f"'{path}'", "").replace(str(path), "").strip().split(". ")[0]
        return f"unreadable: {' '.join(msg.split())[:100]}"
    if stored is None and (b"iclwb.checksum" in meta or "code_hash" in prov or "analysis_version" in prov):
        # written by this store format, which always seals a checksum: a flip in the mark
        # itself must not make the file pass for an older, unchecked one
        return "checksum missing (the file changed after it was written)"
    if stored_key != key:
        return f"holds unit {stored_key}, not {key}"
    want = prov.get("artefact_sha256")
    if want:
        if not art.exists():
            return f"artefact file {art.name} is missing"
        if _artefact_sha256(art) != want:
            return f"artefact file {art.name} is damaged (sha256 mismatch)"
    return None

