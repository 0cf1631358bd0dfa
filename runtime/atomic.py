"""Atomic file and directory replacement, write locks, and the fault-injection hook that tests them.

Readers see the old content or the new, never a half-written one: everything infership writes for others
to read (manifests, results files, pipeline state, reports) goes through here. A process killed at any
instant leaves the previous file or directory in place plus, at worst, a temporary file whose name carries
the dead process's id; the next write to the same place removes it.

The fault hook: ``INFERSHIP_FAULT="kill:POINT"`` makes the process SIGKILL itself when it reaches the
instrumented point ``POINT`` (``kill:POINT#N``: at its N-th visit); ``enospc:POINT`` raises ENOSPC there
instead. Several entries are separated by commas. It exists so that tests can interrupt real commands at
exact points; it costs one environment lookup per write and does nothing when unset.
"""

from __future__ import annotations

import errno
import json
import logging
import os
import shutil
import signal
import sys
import tempfile
import threading
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from .errors import ArtifactLocked, InvalidInputError, StorageError

try:
    import fcntl
except ImportError:  # Windows: scratch folders are recognised by their process id alone
    fcntl = None  # type: ignore[assignment]

log = logging.getLogger(__name__)

#: The environment variable read by :func:`fault`.
FAULT_ENV = "INFERSHIP_FAULT"
_hits: Counter[str] = Counter()
_hits_spec: str | None = None
_hits_lock = threading.Lock()


def fault(point: str) -> None:
    """The fault-injection hook (see the module docstring); a no-op unless ``INFERSHIP_FAULT`` names
    ``point``.

    Raises:
        OSError: ENOSPC, when the variable says ``enospc:POINT``.
    """
    global _hits_spec
    spec = os.environ.get(FAULT_ENV)
    if not spec:
        return
    for item in spec.split(","):
        action, _, target = item.strip().partition(":")
        name, _, nth = target.partition("#")
        if name != point:
            continue
        with _hits_lock:
            if _hits_spec != spec:  # visits are counted from the moment the variable took this value
                _hits.clear()
                _hits_spec = spec
            _hits[point] += 1
            count = _hits[point]
        if nth and count != int(nth):
            continue
        log.warning("fault injected at %s: %s", point, action)
        if action == "kill":
            sys.stdout.flush()
            sys.stderr.flush()
            os.kill(os.getpid(), signal.SIGKILL)
        elif action == "enospc":
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), f"<fault {point}>")


def _pid_alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    except OSError:
        return True
    return True


def _tmp_prefix(name: str) -> str:
    return f".{name}."


def remove_stale_temporaries(directory: Path, name: str) -> list[Path]:
    """Delete ``.NAME.PID.*.tmp`` files and directories in ``directory`` left by dead processes.

    Returns:
        The paths removed.
    """
    prefix = _tmp_prefix(name)
    removed: list[Path] = []
    try:
        entries = list(os.scandir(directory))
    except OSError:
        return removed
    for entry in entries:
        if not (entry.name.startswith(prefix) and entry.name.endswith(".tmp")):
            continue
        pid_text = entry.name[len(prefix) :].split(".", 1)[0]
        if not pid_text.isdigit() or _pid_alive(int(pid_text)):
            continue
        path = Path(entry.path)
        if entry.is_dir(follow_symlinks=False):
            if _held(path):  # a live process elsewhere (another PID namespace) still works in it
                continue
            shutil.rmtree(path, ignore_errors=True)
        else:
            path.unlink(missing_ok=True)
        removed.append(path)
    if removed:
        log.info("removed %d temporary file(s) left by interrupted writes: %s", len(removed), removed)
    return removed


def make_temp(directory: Path, name: str, *, folder: bool = False) -> Path:
    """A new temporary file (or folder) ``directory/.NAME.PID.XXXX.tmp``, private to the user; the process
    id in the name lets a later run recognise it as abandoned."""
    prefix = f"{_tmp_prefix(name)}{os.getpid()}."
    if folder:
        return Path(tempfile.mkdtemp(prefix=prefix, suffix=".tmp", dir=directory))
    fd, tmp = tempfile.mkstemp(prefix=prefix, suffix=".tmp", dir=directory)
    os.close(fd)
    return Path(tmp)


@contextmanager
def scratch_dir(name: str) -> Iterator[Path]:
    """A private scratch folder in the system temporary directory, removed on exit.

    Unlike :class:`tempfile.TemporaryDirectory`, a process killed inside the block does not leave its
    scratch behind for good: the folder is named ``.infership-NAME.PID.XXXX.tmp`` and every new scratch of
    the same name first removes those whose process is gone (exports and quantizations stage whole models
    there, so an abandoned one can hold gigabytes).

    Args:
        name: Which step the scratch belongs to (``"build"``, ``"int8"``...).

    Yields:
        The folder's path.
    """
    base = Path(tempfile.gettempdir())
    label = f"infership-{name}"
    remove_stale_temporaries(base, label)
    path = make_temp(base, label, folder=True)
    # Held for the folder's life: a process id alone can mislead where several PID namespaces (containers)
    # share one temporary directory; a lock is released by the kernel only when its holder is gone.
    fd = os.open(path, os.O_RDONLY) if fcntl is not None else None
    try:
        if fd is not None:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)
        if fd is not None:
            os.close(fd)


def _held(folder: Path) -> bool:
    """Whether a live process holds ``folder``'s scratch lock (see :func:`scratch_dir`)."""
    if fcntl is None:
        return False
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return False
    try:
        return not _try_lock(fd)  # the write locks' own non-blocking attempt
    finally:
        os.close(fd)  # closing releases a lock taken here


def _umask() -> int:
    try:
        with open("/proc/self/status", encoding="ascii") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    return 0o022


def public_mode(*, folder: bool) -> int:
    """The mode a normally created file (0666) or folder (0777) gets under the process's umask."""
    return (0o777 if folder else 0o666) & ~_umask()


def _storage_error(exc: OSError, what: str) -> StorageError:
    return StorageError(exc.errno or errno.EIO, f"{what}: {exc.strerror or exc}; nothing was replaced")


def write_text_atomic(path: str | os.PathLike[str], text: str) -> Path:
    """Write ``text`` to ``path`` via a temporary file in the same directory, fsync, then rename.

    Parent directories are created. On failure the temporary file is removed and ``path`` is untouched.
    Temporary files of earlier writes to ``path`` that were killed are removed first.

    Returns:
        The path written.

    Raises:
        InvalidInputError: ``path`` exists and is not a regular file (a device, FIFO or directory is never
            replaced).
        StorageError: The write failed (disk full, permissions, read-only file system).
    """
    p = Path(path)
    if p.exists() and not p.is_file():
        raise InvalidInputError(
            f"{p} exists and is not a regular file; infership writes files by replacing them atomically and "
            "never replaces a device, pipe or directory"
        )
    data = text.encode("utf-8")
    try:
        p.parent.mkdir(parents=True, exist_ok=True)
        remove_stale_temporaries(p.parent, p.name)
        tmp = make_temp(p.parent, p.name)
    except OSError as exc:
        raise _storage_error(exc, f"cannot write {p}") from exc
    try:
        with open(tmp, "wb") as f:
            f.write(data[: len(data) // 2])
            fault("atomic.write")
            f.write(data[len(data) // 2 :])
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, public_mode(folder=False))  # mkstemp creates 0600; these files are read by others
        fault("atomic.before_replace")
        os.replace(tmp, p)
    except BaseException as exc:
        tmp.unlink(missing_ok=True)
        if isinstance(exc, OSError):
            raise _storage_error(exc, f"cannot write {p}") from exc
        raise
    fault("atomic.after_replace")
    return p


_RENAME_EXCHANGE = 2
_AT_FDCWD = -100


def _exchange(a: Path, b: Path) -> bool:
    """Swap two paths in one atomic step (Linux ``renameat2(RENAME_EXCHANGE)``); False where unsupported."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        renameat2 = libc.renameat2
    except (OSError, AttributeError):
        return False
    renameat2.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
    if renameat2(_AT_FDCWD, os.fsencode(a), _AT_FDCWD, os.fsencode(b), _RENAME_EXCHANGE) == 0:
        return True
    err = ctypes.get_errno()
    if err in (errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP, errno.ENOTSUP, errno.EXDEV):
        return False  # kernel or file system without exchange: the two-rename way below
    raise OSError(err, os.strerror(err), os.fspath(b))


def _backup_name(root: Path) -> Path:
    return root.with_name(f"{_tmp_prefix(root.name)}{os.getpid()}.{os.urandom(4).hex()}.old.tmp")


def replace_dir(stage: Path, root: Path) -> None:
    """Move the finished directory ``stage`` to ``root``, replacing any directory already there.

    ``stage`` gets the permissions of a normally created folder first (a staging folder is private). On
    Linux the two are exchanged in one atomic step, so ``root`` always exists. Elsewhere the previous
    ``root`` is first moved aside to ``.ROOT.PID.old.tmp`` and deleted only after ``stage`` is in place;
    if the final rename fails, it is put back. Old copies left by a killed process are removed by the next
    call for the same ``root`` (and by :func:`restore_interrupted_replace`).
    """
    restore_interrupted_replace(root)
    remove_stale_temporaries(root.parent, root.name)
    os.chmod(
        stage, public_mode(folder=True)
    )  # staged private (mkdtemp: 0700); finished, it is read by others
    if root.exists() and _exchange(stage, root):
        fault("replace_dir.exchanged")
        backup = _backup_name(root)
        os.replace(stage, backup)  # the previous content, now under a name the next run recognises
        shutil.rmtree(backup, ignore_errors=True)
        return
    backup = None
    if root.exists():
        backup = _backup_name(root)
        os.replace(root, backup)
        fault("replace_dir.moved_aside")
    try:
        os.replace(stage, root)
    except OSError:
        if backup is not None:
            os.replace(backup, root)
        raise
    if backup is not None:
        shutil.rmtree(backup, ignore_errors=True)


def restore_interrupted_replace(root: Path) -> bool:
    """If ``root`` is missing because a replace was killed between its two renames, move the previous
    directory back. Returns whether it did."""
    if root.exists():
        return False
    prefix = _tmp_prefix(root.name)
    try:
        entries = sorted(os.scandir(root.parent), key=lambda e: e.name)
    except OSError:
        return False
    for entry in entries:
        name = entry.name
        if name.startswith(prefix) and name.endswith(".old.tmp") and entry.is_dir(follow_symlinks=False):
            pid = name[len(prefix) :].split(".", 1)[0]
            if pid.isdigit() and not _pid_alive(int(pid)):
                os.replace(entry.path, root)
                log.warning("restored %s from %s, left by an interrupted replace", root, name)
                return True
    return False


def finish_journal(root: Path, journal: Path, listed: set[str]) -> None:
    """Complete an interrupted multi-file commit: ``journal`` (JSON ``{"added": [...], "obsolete": [...]}``,
    paths relative to ``root``) names files to delete unless ``listed``; the journal is removed after."""
    try:
        plan = json.loads(journal.read_text(encoding="utf-8"))
        names = [*plan.get("added", []), *plan.get("obsolete", [])]
    except (OSError, ValueError, AttributeError, TypeError) as exc:
        log.warning("%s: unreadable commit journal (%s); removed, files kept", journal, exc)
        journal.unlink(missing_ok=True)
        return
    base = root.resolve()
    for rel in names:
        if (
            not isinstance(rel, str)
            or rel in listed
            or not rel
            or rel.startswith("/")
            or ".." in rel.split("/")
        ):
            continue
        path = root / rel
        if path.parent.resolve().is_relative_to(base) and (path.is_file() or path.is_symlink()):
            path.unlink()
            log.info("%s: removed %s, left by an interrupted commit", root, rel)
    journal.unlink(missing_ok=True)


def remove_empty_parents(folder: Path, root: Path) -> None:
    """Remove ``folder`` and its parents up to (not including) ``root`` while they are empty."""
    while folder != root and folder.is_relative_to(root):
        try:
            folder.rmdir()
        except OSError:  # not empty (or gone): stop
            return
        folder = folder.parent


class WriteLock:
    """An exclusive, non-blocking lock on a path, held by an open file (``flock``): released when the
    holder closes it or dies, so a killed writer never leaves a stale lock.

    Use :meth:`acquire`; :meth:`release` (idempotent) removes the lock file.
    """

    def __init__(self, path: Path, fd: int) -> None:
        self.path = path
        self._fd: int | None = fd

    @classmethod
    def acquire(cls, path: Path, *, what: str) -> WriteLock:
        """Take the lock at ``path`` or raise at once.

        Args:
            path: The lock file (created if missing).
            what: What the lock protects, for the message.

        Raises:
            ArtifactLocked: Another process (or another writer in this one) holds it.
            StorageError: The lock file cannot be created.
        """
        while True:
            try:
                fd = os.open(path, os.O_RDWR | os.O_CREAT | getattr(os, "O_CLOEXEC", 0), 0o644)
            except OSError as exc:
                raise _storage_error(exc, f"cannot create the lock file {path}") from exc
            if not _try_lock(fd):
                holder = _read_holder(fd)
                os.close(fd)
                raise ArtifactLocked(
                    f"{what} is being written by another process{holder} (lock {path}); wait for it to "
                    "finish, then run again — two writers are never interleaved"
                )
            # The previous holder unlinks the file when it releases: make sure the locked file is the one
            # that is at ``path`` now, else a third process could lock a fresh file beside ours.
            try:
                same = os.path.samestat(os.fstat(fd), os.stat(path))
            except FileNotFoundError:
                same = False
            if same:
                os.ftruncate(fd, 0)
                os.write(fd, f"{os.getpid()}\n".encode())
                return cls(path, fd)
            os.close(fd)

    def release(self) -> None:
        fd, self._fd = self._fd, None
        if fd is None:
            return
        try:
            self.path.unlink(missing_ok=True)  # while still holding it (see acquire)
        except OSError:
            pass
        os.close(fd)

    def __del__(self) -> None:  # a writer that was dropped without commit or abort
        if getattr(self, "_fd", None) is not None:
            self.release()


def _try_lock(fd: int) -> bool:
    try:
        import fcntl
    except ImportError:  # Windows
        import msvcrt

        try:
            msvcrt.locking(fd, msvcrt.LK_NBLCK, 1)
        except OSError:
            return False
        return True
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    return True


def _read_holder(fd: int) -> str:
    try:
        text = os.pread(fd, 32, 0).decode("ascii", "replace").strip()
    except (OSError, AttributeError):
        return ""
    return f" (pid {text})" if text.isdigit() else ""
