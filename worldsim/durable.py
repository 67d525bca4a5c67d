"""Making file writes durable and shareable, for the atomic writers of datasets and checkpoints,
and checking that a file read back is the one whose size and sha256 were recorded."""

from __future__ import annotations

import hashlib
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def recorded_mismatch(file: Path, data: bytes, entry: Mapping[str, Any], recorder: str) -> str | None:
    """Why ``data`` (read from ``file``) is not what ``recorder`` (a manifest, a config) recorded in
    ``entry`` (``{"bytes", "sha256"}``), or None when it is."""
    if len(data) != entry["bytes"]:
        return f"{file} is truncated or altered: {len(data)} bytes where {recorder} records {entry['bytes']}"
    digest = sha256_bytes(data)
    if digest != entry["sha256"]:
        return (
            f"{file} is corrupt: sha256 {digest[:16]}... where {recorder} records {entry['sha256'][:16]}..."
        )
    return None


def fsync_dir(directory: Path) -> None:
    """Make renames and new entries in ``directory`` durable; a no-op where a filesystem does not
    allow opening or syncing a directory."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def current_umask() -> int:
    """The process umask (reading it means setting it, so it is set back at once). Temporary files
    are created private; final files get the permissions the user's umask would give."""
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def write_text_atomic(path: Path, text: str) -> Path:
    """Write ``text`` to ``path`` through a temporary file and a rename: a reader sees the old
    content or the new, never half of it."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    try:
        tmp.write_text(text)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path
