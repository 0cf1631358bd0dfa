"""Artifact directories: loading with integrity checks, and atomic writing.

An artifact is a directory holding ``manifest.json`` and the model files it lists. It is a closed box:
every file a runtime reads (model files, ONNX external data) is listed in the manifest, hash-checked, and
lies inside the directory once symlinks are followed (:mod:`infership.runtime.integrity`).

The manifest is the commit point: new files are written first under names no committed manifest uses,
then the manifest is replaced atomically (``os.replace``). A step that fails, or a process that is killed,
part-way therefore leaves the previous artifact exactly as it was; the next writer removes what the
interrupted one left behind. A new artifact is built in a temporary sibling directory and swapped into
place. One writer at a time: a second one is refused (:class:`ArtifactLocked`), never interleaved.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
from collections.abc import Iterable, Sequence
from dataclasses import replace
from pathlib import Path, PurePosixPath

from .atomic import (
    WriteLock,
    fault,
    finish_journal,
    make_temp,
    remove_empty_parents,
    remove_stale_temporaries,
    replace_dir,
    restore_interrupted_replace,
    write_text_atomic,
)
from .errors import ArtifactError, ArtifactLocked
from .integrity import check_relpath, confined, is_trusted, read_regular, record_trusted, sha256_file
from .manifest import MANIFEST_NAME, FileEntry, Manifest, Step, Variant
from .onnxfile import bare_onnx_files, read_onnx_specs
from .verification import DONE, Wait, check_files, check_hashes, start_hashing

__all__ = ["Artifact", "ArtifactWriter", "file_entry", "read_onnx_specs", "sha256_file"]

log = logging.getLogger(__name__)

#: A manifest is a few kilobytes; anything this large is not one (and is not read into memory).
MANIFEST_LIMIT = 64 << 20
#: Formats whose files are programs run by the torch backend (see :meth:`Artifact.program_trusted`).
PROGRAM_FORMATS = frozenset({"torch-export", "torchscript"})
_STAGE_PREFIX = ".infership-stage"
_JOURNAL = ".infership-commit.json"


def file_entry(root: Path, rel: str) -> FileEntry:
    """Hash and size ``root/rel`` into a manifest entry."""
    path = root / rel
    return FileEntry(path=rel, sha256=sha256_file(path), size=path.stat().st_size)


class Artifact:
    """An artifact directory and its manifest.

    Use :meth:`load` to open one; :class:`ArtifactWriter` to create or extend one.
    """

    def __init__(
        self,
        root: Path,
        manifest: Manifest,
        *,
        derived: bool = False,
        manifest_sha256: str | None = None,
        local: bool = False,
    ) -> None:
        self.root = Path(root)
        self.manifest = manifest
        #: True when the manifest was derived from a bare model file rather than read from disk.
        self.derived = derived
        #: sha256 of ``manifest.json`` as read (None when not read from disk): a writer refuses to commit
        #: over a manifest that changed since.
        self.manifest_sha256 = manifest_sha256
        #: True for an in-memory candidate this process built (its programs are this process's own).
        self.local = local
        self._verified: set[str] = set()

    def __repr__(self) -> str:
        return f"Artifact({str(self.root)!r}, variants={[v.id for v in self.manifest.variants]})"

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> Artifact:
        """Open an artifact directory, or a bare ``.onnx`` file (its manifest is derived from the graph).

        Raises:
            ArtifactError: The path does not exist, has no manifest, or the manifest is malformed, of an
                unsupported schema version, or not a regular file inside the directory.
        """
        p = Path(path)
        if not p.exists():
            raise ArtifactError(
                f"artifact not found: {p} (expected a directory with {MANIFEST_NAME} or a .onnx file)"
            )
        if p.is_file():
            if p.suffix.lower() != ".onnx":
                raise ArtifactError(
                    f"{p}: expected an artifact directory or a .onnx file, got a {p.suffix or 'suffix-less'} file"
                )
            return cls._from_onnx_file(p)
        if not p.is_dir():
            raise ArtifactError(f"{p}: expected an artifact directory or a .onnx file, got a special file")
        mpath = p / MANIFEST_NAME
        if not os.path.lexists(mpath):
            raise ArtifactError(f"{p} is not an artifact: {MANIFEST_NAME} is missing")
        data = read_regular(
            confined(p, MANIFEST_NAME, what="manifest"), limit=MANIFEST_LIMIT, what="manifest"
        )
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise ArtifactError(f"{mpath}: not UTF-8 text ({exc})") from exc
        manifest = Manifest.from_json(text, source=str(mpath))
        return cls(p, manifest, manifest_sha256=hashlib.sha256(data).hexdigest())

    @classmethod
    def _from_onnx_file(cls, path: Path) -> Artifact:
        inputs, outputs = read_onnx_specs(path)
        variant = Variant(id="onnx-fp32", format="onnx", precision="fp32", files=bare_onnx_files(path))
        manifest = Manifest(name=path.stem, inputs=inputs, outputs=outputs, variants=(variant,))
        art = cls(path.parent, manifest, derived=True)
        art._verified.add(variant.id)  # just hashed it
        return art

    @classmethod
    def candidate(
        cls,
        root: str | os.PathLike[str],
        manifest: Manifest,
        *,
        variant_id: str,
        format: str,
        precision: str,
        files: Sequence[str],
        target: str | None = None,
    ) -> Artifact:
        """An in-memory artifact holding one model file that is not part of an artifact yet: a candidate
        being judged (a build check, an int8 model during repair). It carries ``manifest``'s specs, task
        and preprocessing, so the candidate runs through the same backends and checks as a loaded
        artifact — there is no second way to run a model.

        Args:
            root: The directory ``files`` are relative to (a scratch directory).
            manifest: The artifact the candidate belongs to (its variants are not carried over).
            variant_id, format, precision, target: The candidate's variant fields.
            files: Its files relative to ``root``; the first is the one a runtime opens.
        """
        base = Path(root)
        entries = tuple(file_entry(base, rel) for rel in files)
        variant = Variant(id=variant_id, format=format, precision=precision, files=entries, target=target)
        art = cls(base, replace(manifest, variants=(variant,)), local=True)
        art._verified.add(variant_id)  # just hashed
        return art

    def path_of(self, entry: FileEntry) -> Path:
        """Where ``entry`` lies (call :meth:`verify` first: it checks the path stays inside)."""
        return self.root / PurePosixPath(entry.path)

    def verify(self, variant: Variant) -> None:
        """Check that every file of ``variant`` is a regular file inside the artifact matching its recorded
        size and sha256. (Backends that open ONNX files also check that the model reads no external-data
        file the manifest does not list: :func:`infership.runtime.onnxfile.check_external_data`.)

        Raises:
            IntegrityError: A file is missing, not a regular file, outside the artifact once symlinks
                resolve, or of another size or hash than recorded.
        """
        if variant.id not in self._verified:
            check_hashes(variant, check_files(self.root, variant))
            self._verified.add(variant.id)

    def verify_started(self, variant: Variant) -> Wait:
        """:meth:`verify`, with the hashing of model formats in a background thread so that a runtime can
        open the files meanwhile (:mod:`infership.runtime.verification`). Paths and sizes are checked now;
        program formats are hashed now too (opening them runs their code).

        Returns:
            ``wait()``, which raises :class:`IntegrityError` when a hash differs; call it before the
            session opened meanwhile is used (:class:`~infership.runtime.verification.VerifiedOnFirstRun`
            does). :data:`~infership.runtime.verification.DONE` when nothing is pending.

        Raises:
            IntegrityError: A path or size does not match (see :meth:`verify`).
        """
        if variant.id in self._verified:
            return DONE
        files = check_files(self.root, variant)
        background = variant.format not in PROGRAM_FORMATS
        return start_hashing(
            variant, files, background=background, on_success=lambda: self._verified.add(variant.id)
        )

    def verify_all(self) -> None:
        """Verify every variant (see :meth:`verify`)."""
        for v in self.manifest.variants:
            self.verify(v)

    def program_trusted(self, variant: Variant) -> bool:
        """Whether ``variant``'s program files were built by this installation: an in-memory candidate,
        or files an :class:`ArtifactWriter` of this user recorded when it committed them."""
        return self.local or all(is_trusted(f.sha256) for f in variant.files)


class ArtifactWriter:
    """Creates a new artifact, or adds variants to an existing one, atomically and one writer at a time.

    Example::

        w = ArtifactWriter.create("out/resnet", manifest)
        w.add_file(tmp_onnx, "model.onnx")
        w.put_variant("onnx-fp32", format="onnx", precision="fp32", files=["model.onnx"], steps=[...])
        artifact = w.commit()

    The writer holds a lock on the artifact from creation until :meth:`commit` or :meth:`abort` (a file
    lock, released by the system if the process dies). Files are staged in a temporary folder — a sibling
    for a new artifact, a hidden folder inside it for an update — so nothing a reader sees changes before
    the commit. Whatever an interrupted writer left (staging folders, temporary files, files moved in by a
    commit that was killed before its manifest was written) is removed by the next writer.

    Args:
        root: The artifact directory.
        manifest: The manifest to start from (an existing artifact's, or a fresh one).
        new: Build in a temporary sibling directory and swap it into place on commit.
        overwrite: With ``new``, replace an existing artifact directory on commit.
        expect_manifest_sha256: For an update, the sha256 of the ``manifest.json`` the caller read; the
            writer is refused if the file changed since (another writer committed meanwhile).

    Raises:
        ArtifactLocked: Another writer holds the artifact, or its manifest changed since it was read.
        ArtifactError: ``new`` without ``overwrite`` on a non-empty directory.
        StorageError: The lock or staging folder cannot be created.
    """

    def __init__(
        self,
        root: Path,
        manifest: Manifest,
        *,
        new: bool,
        overwrite: bool = False,
        expect_manifest_sha256: str | None = None,
    ) -> None:
        self.root = Path(root)
        self.manifest = manifest
        self._new = new
        self._overwrite = overwrite
        self._committed_files = {f.path for v in manifest.variants for f in v.files}
        self._pending: list[str] = []
        self._put: set[str] = set()
        self._done = False
        if new:
            self.root.parent.mkdir(parents=True, exist_ok=True)
        self._lock = self._acquire()
        try:
            self._recover()
            if new:
                if self.root.exists() and not self.root.is_dir():
                    raise ArtifactError(f"{self.root} exists and is not a directory; choose another path")
                if self.root.exists() and any(self.root.iterdir()) and not overwrite:
                    raise ArtifactError(
                        f"{self.root} exists and is not empty (pass overwrite=True / --force to replace it)"
                    )
                self._stage = make_temp(self.root.parent, self.root.name, folder=True)
            else:
                self._check_unchanged(expect_manifest_sha256)
                self._stage = make_temp(self.root, _STAGE_PREFIX[1:], folder=True)
        except BaseException:
            self._lock.release()
            raise

    @classmethod
    def create(
        cls, root: str | os.PathLike[str], manifest: Manifest, *, overwrite: bool = False
    ) -> ArtifactWriter:
        """A writer for a new artifact at ``root`` (see the class docstring for what it raises)."""
        return cls(Path(root), manifest, new=True, overwrite=overwrite)

    @classmethod
    def update(cls, artifact: Artifact) -> ArtifactWriter:
        """A writer adding to ``artifact``; refused if its manifest changed since it was loaded."""
        if artifact.derived:
            raise ArtifactError(
                f"{artifact.root}: a bare .onnx file has no manifest to extend; export it into an artifact first"
            )
        return cls(
            artifact.root, artifact.manifest, new=False, expect_manifest_sha256=artifact.manifest_sha256
        )

    # ------------------------------------------------------------------ lock and recovery
    def _acquire(self) -> WriteLock:
        what = f"artifact {self.root}"
        try:
            return WriteLock.acquire(self.root.parent / f".{self.root.name}.lock", what=what)
        except ArtifactLocked:
            raise
        except OSError:
            if self._new:
                raise
            # A parent folder this user cannot write: lock inside the artifact instead.
            return WriteLock.acquire(self.root / ".infership.lock", what=what)

    def _recover(self) -> None:
        """Under the lock: undo or finish what an interrupted writer left (no other writer is running)."""
        restore_interrupted_replace(self.root)
        remove_stale_temporaries(self.root.parent, self.root.name)
        if not self.root.is_dir():
            return
        remove_stale_temporaries(self.root, _STAGE_PREFIX[1:])
        remove_stale_temporaries(self.root, MANIFEST_NAME)
        remove_stale_temporaries(self.root, _JOURNAL[1:])
        journal = self.root / _JOURNAL
        if journal.is_file():
            self._finish_interrupted_commit(journal)

    def _finish_interrupted_commit(self, journal: Path) -> None:
        """The manifest on disk is the old one or the new one, both complete: remove the files a killed
        commit moved in (or meant to retire) that it does not list."""
        try:
            listed = {f.path for v in Artifact.load(self.root).manifest.variants for f in v.files}
        except ArtifactError as exc:
            log.warning("%s: cannot finish an interrupted commit (%s); its files are kept", self.root, exc)
            return
        finish_journal(self.root, journal, listed)

    def _check_unchanged(self, expected: str | None) -> None:
        if expected is None:
            return
        try:
            current = hashlib.sha256(
                read_regular(self.root / MANIFEST_NAME, limit=MANIFEST_LIMIT, what="manifest")
            ).hexdigest()
        except ArtifactError as exc:
            raise ArtifactLocked(f"artifact {self.root} changed since it was loaded ({exc})") from exc
        if current != expected:
            raise ArtifactLocked(
                f"artifact {self.root} changed since it was loaded (another writer committed meanwhile); "
                "load it again and redo the change — committing would drop the other writer's variants"
            )

    # ------------------------------------------------------------------ staging
    @property
    def staging_dir(self) -> Path:
        """Where files for this write go; hand it to tools that write several files (OpenVINO IR)."""
        return self._stage

    def free_name(self, rel: str) -> str:
        """``rel``, or a variant of it that no committed variant uses and no file occupies."""
        check_relpath(rel)
        candidate, n = rel, 1
        stem, dot, suffix = rel.partition(".")
        while (
            candidate in self._committed_files
            or os.path.lexists(self._stage / candidate)
            or (not self._new and os.path.lexists(self.root / candidate))
        ):
            n += 1
            candidate = f"{stem}-{n}{dot}{suffix}"
        return candidate

    def add_file(self, src: str | os.PathLike[str], rel: str, *, move: bool = True) -> str:
        """Place ``src`` in the artifact as ``rel`` (or a free variant of it); returns the name used."""
        rel = self.free_name(rel)
        dest = self._stage / rel
        dest.parent.mkdir(parents=True, exist_ok=True)
        if move:
            shutil.move(os.fspath(src), dest)
        else:
            shutil.copy2(os.fspath(src), dest)
        self._pending.append(rel)
        fault("writer.staged")
        return rel

    def adopt(self, rel: str) -> str:
        """Register a file that a tool already wrote into :attr:`staging_dir` as ``rel``."""
        check_relpath(rel)
        if not (self._stage / rel).is_file():
            raise ArtifactError(f"cannot adopt {rel}: no such file in {self._stage}")
        self._pending.append(rel)
        return rel

    def put_variant(
        self,
        variant_id: str,
        *,
        format: str,
        precision: str,
        files: Iterable[str],
        steps: Iterable[Step] = (),
        validation: dict | None = None,
        calibration: dict | None = None,
        target: str | None = None,
    ) -> Variant:
        """Hash ``files`` (staged, or already committed) and add (or replace) a variant in the pending
        manifest."""
        entries = []
        for rel in files:
            check_relpath(rel)
            if os.path.lexists(self._stage / rel):
                entries.append(file_entry(self._stage, rel))
            else:
                confined(self.root, rel)
                entries.append(file_entry(self.root, rel))
        variant = Variant(
            id=variant_id,
            format=format,
            precision=precision,
            files=tuple(entries),
            steps=tuple(steps),
            validation=validation,
            calibration=calibration,
            target=target,
        )
        self.manifest = self.manifest.with_variant(variant)
        self._put.add(variant_id)
        return variant

    def set_manifest(self, **changes: object) -> None:
        """Change top-level manifest fields (labels, preprocessing, versions...)."""
        self.manifest = replace(self.manifest, **changes)  # type: ignore[arg-type]

    # ------------------------------------------------------------------ commit
    def commit(self) -> Artifact:
        """Write the manifest atomically and, for a new artifact, swap it into place."""
        if self._done:
            raise ArtifactError("this ArtifactWriter was already committed or aborted")
        fault("writer.commit")
        text = self.manifest.to_json()
        if self._new:
            write_text_atomic(self._stage / MANIFEST_NAME, text)
            replace_dir(self._stage, self.root)
        else:
            self._commit_update(text)
        self._record_programs()
        self._done = True
        self._lock.release()
        return Artifact(self.root, self.manifest, manifest_sha256=hashlib.sha256(text.encode()).hexdigest())

    def _commit_update(self, text: str) -> None:
        listed = {f.path for v in self.manifest.variants for f in v.files}
        added = [rel for rel in dict.fromkeys(self._pending) if rel in listed]
        obsolete = sorted(self._committed_files - listed)
        # The journal lets the next writer remove what this commit moved in if it is killed before the
        # manifest is replaced (and retire the obsolete files if it is killed after).
        journal = self.root / _JOURNAL
        write_text_atomic(journal, json.dumps({"added": added, "obsolete": obsolete}) + "\n")
        try:
            for rel in added:
                dest = self.root / rel
                dest.parent.mkdir(parents=True, exist_ok=True)
                os.replace(self._stage / rel, dest)
                fault("writer.moved")
            write_text_atomic(self.root / MANIFEST_NAME, text)
            fault("writer.committed")
            for rel in obsolete:
                path = self.root / rel
                path.unlink(missing_ok=True)
                remove_empty_parents(path.parent, self.root)
        except BaseException:
            # A failed write (disk full...): the manifest on disk is the old or the new one; drop the
            # files it does not list now rather than leave them to the next writer.
            self._finish_interrupted_commit(journal)
            raise
        journal.unlink(missing_ok=True)
        shutil.rmtree(self._stage, ignore_errors=True)

    def _record_programs(self) -> None:
        for v in self.manifest.variants:
            if v.id in self._put and v.format in PROGRAM_FORMATS:
                for f in v.files:
                    record_trusted(f.sha256)

    def abort(self) -> None:
        """Drop everything written by this writer; the previous artifact is untouched."""
        if self._done:
            return
        self._done = True
        shutil.rmtree(self._stage, ignore_errors=True)
        self._lock.release()

    def __enter__(self) -> ArtifactWriter:
        return self

    def __exit__(self, exc_type: object, *rest: object) -> None:
        if exc_type is not None or not self._done:
            self.abort()
