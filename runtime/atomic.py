"""Atomic file and directory replacement: readers see the old content or the new, never a half-written one.

Everything infership writes for others to read (manifests, results files, pipeline state, reports) goes
through here.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path


def write_text_atomic(path: str | os.PathLike[str], text: str) -> Path:
    """Write ``text`` to ``path`` via a temporary file in the same directory, fsync, then rename.

    Parent directories are created. On failure the temporary file is removed and ``path`` is untouched.

    Returns:
        The path written.
    """
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{p.name}.", suffix=".tmp", dir=p.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o644)  # mkstemp creates 0600; these files are meant to be read by others
        os.replace(tmp, p)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return p


def replace_dir(stage: Path, root: Path) -> None:
    """Move the finished directory ``stage`` to ``root``, replacing any directory already there.

    The previous ``root`` is moved aside first and deleted only after ``stage`` is in place; if that final
    rename fails, the previous directory is put back.
    """
    backup = None
    if root.exists():
        backup = root.with_name(f".{root.name}.old-{os.getpid()}")
        os.replace(root, backup)
    try:
        os.replace(stage, root)
    except OSError:
        if backup is not None:
            os.replace(backup, root)
        raise
    if backup is not None:
        shutil.rmtree(backup, ignore_errors=True)
