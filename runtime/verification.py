"""Checking a variant's files against the manifest, with the hashing off the load's critical path.

Loading a variant checks every file: a regular file inside the artifact (:func:`~.integrity.confined`), of
the recorded size, with the recorded sha256. The first two checks are cheap and run before the runtime
touches anything. Hashing a large model costs about a third of what a runtime takes to open it, so for
model formats the hash runs in a background thread while the runtime opens the file and after ``load``
returns (both release the GIL); the session is wrapped (:class:`VerifiedOnFirstRun`) so that its first
run waits for the hash: a file that does not match is refused — :class:`IntegrityError`, the session
closed — before any output is produced, on that call and every later one. Program formats
(``torch.export``, TorchScript) are hashed before they are opened, because opening them runs their code.

The manifest still decides what is loaded; no file stamp (mtime, inode) is trusted in place of the hash.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from .errors import IntegrityError
from .integrity import confined, sha256_file
from .manifest import FileEntry, Variant

#: Below this many bytes a variant is hashed in the calling thread: a thread would cost more than it saves.
BACKGROUND_MIN_BYTES = 1 << 20

Wait = Callable[[], None]
"""``wait()``: returns once the files were found to match, else raises :class:`IntegrityError`."""


def _done() -> None:
    """The files were checked already."""


#: The ``wait()`` of files checked already (nothing pending).
DONE: Wait = _done


def check_files(root: Path, variant: Variant) -> list[tuple[FileEntry, Path]]:
    """Each file of ``variant`` as a regular file inside ``root`` of its recorded size.

    Raises:
        IntegrityError: A file is missing, not a regular file, outside the artifact once symlinks resolve,
            or of another size than recorded.
    """
    out = []
    for entry in variant.files:
        path = confined(root, entry.path, what=f"variant {variant.id!r}: file")
        size = path.stat().st_size
        if size != entry.size:
            raise IntegrityError(
                f"variant {variant.id!r}: {entry.path} is {size} bytes, the manifest says {entry.size} "
                "(stale or tampered file; rebuild the artifact)"
            )
        out.append((entry, path))
    return out


def check_hashes(variant: Variant, files: Sequence[tuple[FileEntry, Path]]) -> None:
    """Raise :class:`IntegrityError` unless every file's sha256 is the recorded one."""
    for entry, path in files:
        digest = sha256_file(path)
        if digest != entry.sha256:
            raise IntegrityError(
                f"variant {variant.id!r}: sha256 of {entry.path} is {digest[:12]}…, the manifest says "
                f"{entry.sha256[:12]}… (stale or tampered file; rebuild the artifact)"
            )


def start_hashing(
    variant: Variant,
    files: Sequence[tuple[FileEntry, Path]],
    *,
    background: bool,
    on_success: Callable[[], None],
) -> Wait:
    """Hash ``files`` now, or in a background thread when ``background`` and they are large enough.

    Returns:
        ``wait()``; ``on_success`` runs once the hashes matched.
    """
    if not background or sum(e.size for e, _ in files) < BACKGROUND_MIN_BYTES:
        check_hashes(variant, files)
        on_success()
        return DONE
    failure: list[Exception] = []
    matched: list[bool] = []

    def work() -> None:
        try:
            check_hashes(variant, files)
        except (OSError, IntegrityError) as exc:  # handed to wait(), which raises it in the loading thread
            failure.append(exc)
        else:
            matched.append(True)

    thread = threading.Thread(target=work, name=f"infership-verify-{variant.id}", daemon=True)
    thread.start()

    def wait() -> None:
        thread.join()
        if failure:
            raise failure[0]
        if not matched:  # the thread died of something else (printed by threading.excepthook): not verified
            raise IntegrityError(f"variant {variant.id!r}: its files could not be hashed")
        on_success()

    return wait


class VerifiedOnFirstRun:
    """A session whose first ``run`` waits for its files' background hash check (see the module docstring).

    Once the hashes matched, ``run`` is the wrapped session's own method (set on the instance), so later
    calls cost nothing extra. If they did not match, the session is closed and every call raises the
    :class:`IntegrityError`.
    """

    def __init__(self, session: Any, wait: Wait) -> None:
        self._inner = session
        self._wait = wait
        self._lock = threading.Lock()
        self._failure: IntegrityError | None = None
        self._checked = False
        self.inputs = session.inputs
        self.outputs = session.outputs
        self.placement = session.placement
        self.accepts_device_tensors = session.accepts_device_tensors

    def __getattr__(self, name: str) -> Any:
        # Everything else the runtime's session tells (e.g. OpenVINO's ``optimal_concurrency``) is its own.
        if name.startswith("__") or name == "_inner":
            raise AttributeError(name)
        return getattr(self._inner, name)

    def run(self, feeds: Mapping[str, Any]) -> dict[str, Any]:
        if not self._checked:
            with self._lock:
                if not self._checked:
                    try:
                        self._wait()
                    except IntegrityError as exc:
                        self._failure = exc
                        self._inner.close()
                    else:
                        self.run = self._inner.run  # type: ignore[method-assign]
                    self._checked = True
        if self._failure is not None:
            raise self._failure
        return self._inner.run(feeds)

    def close(self) -> None:
        self._inner.close()

    def __enter__(self) -> VerifiedOnFirstRun:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
