"""An artifact is a closed box: every file a runtime reads lies inside it and is hash-checked.

- Paths in a manifest are plain relative paths (:func:`check_relpath`): no ``..``, no absolute path, no
  drive or backslash. A path is refused at parse time, before any file is touched.
- Following a path must stay inside the artifact (:func:`confined`): a symlink that leads out of the
  directory is refused, so nobody who can only drop files *next to* an artifact can swap its model.
- Only regular files are read (a FIFO would block the reader forever, a device never ends).
- Compiled-model caches (OpenVINO blobs, TensorRT engines) live outside the artifact, under the user's
  cache directory, in a folder keyed by the sha256 of the model files (:func:`runtime_cache_dir`): a
  directory someone else wrote cannot carry a compiled model that replaces the verified one.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import stat
from collections.abc import Mapping, Sequence
from pathlib import Path, PurePosixPath
from typing import Any

from .errors import ArtifactError, IntegrityError

# Control characters, backslashes (a separator on Windows) and colons (drive letters, NTFS streams).
_BAD_CHARS = re.compile(r"[\x00-\x1f\x7f\\:]")


_CHUNK = 1 << 20


def sha256_file(path: Path) -> str:
    """Hex sha256 of a file, read in 1 MiB chunks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(_CHUNK):
            h.update(chunk)
    return h.hexdigest()


def check_relpath(rel: Any, *, what: str = "file path") -> str:
    """Return ``rel`` if it is a plain relative POSIX path inside its root, else raise ArtifactError.

    Args:
        rel: The path as written in a manifest (or an ONNX external-data location).
        what: What the path names, for the message.

    Raises:
        ArtifactError: Not a string, empty, absolute, with a ``.``/``..`` or empty component, or with a
            control character, backslash or colon.
    """
    if not isinstance(rel, str):
        raise ArtifactError(f"{what} must be a string, got {type(rel).__name__} {rel!r}")
    if not rel or len(rel) > 4096:
        raise ArtifactError(f"{what} {rel[:80]!r}: expected a relative path of 1 to 4096 characters")
    if _BAD_CHARS.search(rel):
        raise ArtifactError(
            f"{what} {rel!r}: control characters, backslashes and colons are not allowed (use '/' between parts)"
        )
    if rel.startswith("/"):
        raise ArtifactError(f"{what} {rel!r} is absolute; an artifact lists paths relative to its directory")
    parts = rel.split("/")
    if any(p in ("", ".", "..") for p in parts):
        raise ArtifactError(
            f"{what} {rel!r}: '..', '.' and empty parts are not allowed (an artifact never reads outside itself)"
        )
    return rel


def confined(root: Path, rel: str, *, what: str = "file") -> Path:
    """The real path of ``root/rel``, which must be a regular file inside ``root`` once symlinks resolve.

    Raises:
        IntegrityError: The file is missing, is not a regular file, or resolves outside ``root``.
    """
    check_relpath(rel, what=f"{what} path")
    base = Path(root).resolve()
    path = base / PurePosixPath(rel)
    try:
        real = path.resolve(strict=True)
    except FileNotFoundError as exc:
        raise IntegrityError(f"{what} {rel} listed in the manifest is missing") from exc
    except (OSError, RuntimeError) as exc:  # a symlink loop raises RuntimeError on older Pythons
        raise IntegrityError(f"{what} {rel}: cannot resolve the path ({exc})") from exc
    if not real.is_relative_to(base):
        raise IntegrityError(
            f"{what} {rel} resolves to {real}, outside the artifact directory {base} (a symlink leading "
            "out); an artifact never reads outside itself: copy the file in instead"
        )
    try:
        mode = real.stat().st_mode
    except OSError as exc:
        raise IntegrityError(f"{what} {rel}: cannot stat ({exc.strerror or exc})") from exc
    if not stat.S_ISREG(mode):
        raise IntegrityError(f"{what} {rel} is not a regular file")
    return real


def read_regular(path: Path, *, limit: int, what: str) -> bytes:
    """Read a regular file of at most ``limit`` bytes without ever blocking on a FIFO or reading a device.

    Raises:
        ArtifactError: Not a regular file, larger than ``limit``, or unreadable.
    """
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0))
    except OSError as exc:
        raise ArtifactError(f"{what} {path}: cannot open ({exc.strerror or exc})") from exc
    with os.fdopen(fd, "rb") as f:
        info = os.fstat(f.fileno())
        if not stat.S_ISREG(info.st_mode):
            raise ArtifactError(f"{what} {path} is not a regular file")
        if info.st_size > limit:
            raise ArtifactError(f"{what} {path} is {info.st_size} bytes; at most {limit} are read")
        data = f.read(limit + 1)
    if len(data) > limit:
        raise ArtifactError(f"{what} {path} grew past {limit} bytes while it was read")
    return data


def default_cache_root() -> Path:
    """``$XDG_CACHE_HOME/infership``, else ``~/.cache/infership``."""
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "infership"


def runtime_cache_dir(
    kind: str, file_hashes: Sequence[str], key: Mapping[str, Any], cache_dir: Path | None = None
) -> Path:
    """The folder for one runtime's compiled form of one model: ``<root>/<kind>/<digest>``.

    The digest hashes the model files' sha256 (as verified against the manifest) with ``key`` (runtime
    version, device, build options), so a changed model, runtime or option gets a fresh folder, and a
    compiled blob is only ever found by the model it was compiled from. The folder is created private to
    the user (mode 0700).

    Args:
        kind: The runtime (``openvino``, ``trt``).
        file_hashes: sha256 of the variant's files.
        key: Everything else the compiled form depends on (JSON-serialisable).
        cache_dir: The caller's cache root (``BackendOptions.cache_dir``); default
            :func:`default_cache_root`.

    Raises:
        OSError: The folder cannot be created.
    """
    payload = json.dumps({"files": list(file_hashes), **dict(key)}, sort_keys=True, default=str)
    digest = hashlib.sha256(payload.encode()).hexdigest()[:32]
    path = Path(cache_dir or default_cache_root()) / kind / digest
    path.mkdir(parents=True, exist_ok=True, mode=0o700)
    return path


def _trust_dir() -> Path:
    base = os.environ.get("XDG_DATA_HOME") or os.path.join(os.path.expanduser("~"), ".local", "share")
    return Path(base) / "infership" / "trusted-programs"


def record_trusted(sha256: str) -> None:
    """Remember that this installation built the program file with this sha256 (see
    :meth:`infership.runtime.Artifact.program_trusted`). Failing to record is logged, not raised: the
    program then needs the explicit opt-in to run."""
    if not re.fullmatch(r"[0-9a-f]{64}", sha256):
        return
    folder = _trust_dir()
    try:
        folder.mkdir(parents=True, exist_ok=True, mode=0o700)
        (folder / sha256).touch()
    except OSError as exc:
        logging.getLogger(__name__).warning("cannot record a trusted program in %s: %s", folder, exc)


def is_trusted(sha256: str) -> bool:
    """Whether :func:`record_trusted` recorded this sha256 for this user."""
    return bool(re.fullmatch(r"[0-9a-f]{64}", sha256)) and (_trust_dir() / sha256).is_file()
