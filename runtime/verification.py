"""Checking a variant's files against the manifest, with the hashing off the load's critical path.

Loading a variant checks every file: a regular file inside the artifact (:func:`~.integrity.confined`), of
the recorded size, with the recorded sha256. The first two checks are cheap and run before the runtime
touches anything. Hashing a large model costs about as much as a runtime takes to parse it, so for model
formats the hash runs in a background thread *while* the runtime opens the file (both release the GIL),
and the load waits for it before it returns: a file that does not match is refused, its session closed,
before the first ``predict``. Program formats (``torch.export``, TorchScript) are hashed before they are
opened, because opening them runs their code.

The manifest still decides what is loaded; no file stamp (mtime, inode) is trusted in place of the hash.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from pathlib import Path

from .errors import IntegrityError
from .integrity import confined, sha256_file
from .manifest import FileEntry, Variant

#: Below this many bytes a variant is hashed in the calling thread: a thread would cost more than it saves.
BACKGROUND_MIN_BYTES = 1 << 20

Wait = Callable[[], None]
"""``wait()``: returns once the files were found to match, else raises :class:`IntegrityError`."""


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
        return lambda: None
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
