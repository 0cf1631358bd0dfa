"""Artifact directories: loading with integrity checks, and atomic writing.

An artifact is a directory holding ``manifest.json`` and the model files it lists. The manifest is the
commit point: new files are written first under names no committed manifest uses, then the manifest is
replaced atomically (``os.replace``). A step that fails part-way therefore leaves the previous artifact
exactly as it was. A new artifact is built in a temporary sibling directory and renamed into place.
"""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
import tempfile
from collections.abc import Iterable, Sequence
from dataclasses import replace
from pathlib import Path

from .atomic import replace_dir, write_text_atomic
from .errors import ArtifactError, IntegrityError
from .manifest import MANIFEST_NAME, FileEntry, Manifest, Step, Variant
from .spec import TensorSpec

log = logging.getLogger(__name__)

_CHUNK = 1 << 20


def sha256_file(path: Path) -> str:
    """Hex sha256 of a file, read in 1 MiB chunks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(_CHUNK):
            h.update(chunk)
    return h.hexdigest()


def file_entry(root: Path, rel: str) -> FileEntry:
    """Hash and size ``root/rel`` into a manifest entry."""
    path = root / rel
    return FileEntry(path=rel, sha256=sha256_file(path), size=path.stat().st_size)


class Artifact:
    """An artifact directory and its manifest.

    Use :meth:`load` to open one; :class:`ArtifactWriter` to create or extend one.
    """

    def __init__(self, root: Path, manifest: Manifest, *, derived: bool = False) -> None:
        self.root = Path(root)
        self.manifest = manifest
        #: True when the manifest was derived from a bare model file rather than read from disk.
        self.derived = derived
        self._verified: set[str] = set()

    def __repr__(self) -> str:
        return f"Artifact({str(self.root)!r}, variants={[v.id for v in self.manifest.variants]})"

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> Artifact:
        """Open an artifact directory, or a bare ``.onnx`` file (its manifest is derived from the graph).

        Raises:
            ArtifactError: The path does not exist, has no manifest, or the manifest is malformed or of
                an unsupported schema version.
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
        mpath = p / MANIFEST_NAME
        if not mpath.is_file():
            raise ArtifactError(f"{p} is not an artifact: {MANIFEST_NAME} is missing")
        manifest = Manifest.from_json(mpath.read_text(encoding="utf-8"), source=str(mpath))
        return cls(p, manifest)

    @classmethod
    def _from_onnx_file(cls, path: Path) -> Artifact:
        inputs, outputs = read_onnx_specs(path)
        entry = file_entry(path.parent, path.name)
        variant = Variant(id="onnx-fp32", format="onnx", precision="fp32", files=(entry,))
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
        art = cls(base, replace(manifest, variants=(variant,)))
        art._verified.add(variant_id)  # just hashed
        return art

    def path_of(self, entry: FileEntry) -> Path:
        return self.root / entry.path

    def verify(self, variant: Variant) -> None:
        """Check that every file of ``variant`` exists and matches its recorded size and sha256.

        Raises:
            IntegrityError: A file is missing, or its size or hash differs from the manifest.
        """
        if variant.id in self._verified:
            return
        for entry in variant.files:
            path = self.path_of(entry)
            if not path.is_file():
                raise IntegrityError(
                    f"variant {variant.id!r}: file {entry.path} listed in the manifest is missing"
                )
            size = path.stat().st_size
            if size != entry.size:
                raise IntegrityError(
                    f"variant {variant.id!r}: {entry.path} is {size} bytes, the manifest says {entry.size} "
                    "(stale or tampered file; rebuild the artifact)"
                )
            digest = sha256_file(path)
            if digest != entry.sha256:
                raise IntegrityError(
                    f"variant {variant.id!r}: sha256 of {entry.path} is {digest[:12]}…, the manifest says "
                    f"{entry.sha256[:12]}… (stale or tampered file; rebuild the artifact)"
                )
        self._verified.add(variant.id)

    def verify_all(self) -> None:
        """Verify every variant (see :meth:`verify`)."""
        for v in self.manifest.variants:
            self.verify(v)


def read_onnx_specs(path: Path) -> tuple[tuple[TensorSpec, ...], tuple[TensorSpec, ...]]:
    """Input and output specs of an ONNX file, read with the ``onnx`` package (weights not loaded)."""
    try:
        import onnx
        from onnx import helper
    except ImportError as exc:
        raise ArtifactError(
            f"reading {path.name} needs the onnx package: pip install 'infership[convert]'"
        ) from exc
    try:
        model = onnx.load(str(path), load_external_data=False)
    except Exception as exc:  # onnx raises DecodeError, OSError, ValueError...: translated below
        raise ArtifactError(f"{path}: not a readable ONNX model ({type(exc).__name__}: {exc})") from exc
    initializers = {i.name for i in model.graph.initializer}

    def spec(vi: object) -> TensorSpec:
        tt = vi.type.tensor_type  # type: ignore[attr-defined]
        dims: list[int | str | None] = []
        for d in tt.shape.dim:
            if d.HasField("dim_value"):
                dims.append(int(d.dim_value))
            else:
                dims.append(d.dim_param or None)
        dtype = helper.tensor_dtype_to_np_dtype(tt.elem_type).name
        return TensorSpec(vi.name, dtype, tuple(dims))  # type: ignore[attr-defined]

    inputs = tuple(spec(v) for v in model.graph.input if v.name not in initializers)
    outputs = tuple(spec(v) for v in model.graph.output)
    if not inputs or not outputs:
        raise ArtifactError(f"{path}: the graph has no inputs or no outputs")
    return inputs, outputs


class ArtifactWriter:
    """Creates a new artifact, or adds variants to an existing one, atomically.

    Example::

        w = ArtifactWriter.create("out/resnet", manifest)
        w.add_file(tmp_onnx, "model.onnx")
        w.put_variant("onnx-fp32", format="onnx", precision="fp32", files=["model.onnx"], steps=[...])
        artifact = w.commit()

    Args:
        root: The artifact directory.
        manifest: The manifest to start from (an existing artifact's, or a fresh one).
        new: Build in a temporary sibling directory and rename into place on commit.
        overwrite: With ``new``, replace an existing artifact directory on commit.
    """

    def __init__(self, root: Path, manifest: Manifest, *, new: bool, overwrite: bool = False) -> None:
        self.root = Path(root)
        self.manifest = manifest
        self._new = new
        self._overwrite = overwrite
        self._committed_files = {f.path for v in manifest.variants for f in v.files}
        if new:
            if self.root.exists() and any(self.root.iterdir()) and not overwrite:
                raise ArtifactError(
                    f"{self.root} exists and is not empty (pass overwrite=True / --force to replace it)"
                )
            self.root.parent.mkdir(parents=True, exist_ok=True)
            self._stage = Path(
                tempfile.mkdtemp(prefix=f".{self.root.name}.", suffix=".tmp", dir=self.root.parent)
            )
        else:
            self._stage = self.root
        self._pending: list[Path] = []
        self._done = False

    @classmethod
    def create(
        cls, root: str | os.PathLike[str], manifest: Manifest, *, overwrite: bool = False
    ) -> ArtifactWriter:
        return cls(Path(root), manifest, new=True, overwrite=overwrite)

    @classmethod
    def update(cls, artifact: Artifact) -> ArtifactWriter:
        if artifact.derived:
            raise ArtifactError(
                f"{artifact.root}: a bare .onnx file has no manifest to extend; export it into an artifact first"
            )
        return cls(artifact.root, artifact.manifest, new=False)

    @property
    def staging_dir(self) -> Path:
        """Where files for this write go; hand it to tools that write several files (OpenVINO IR)."""
        return self._stage

    def free_name(self, rel: str) -> str:
        """``rel``, or a variant of it that no committed variant uses and no file occupies."""
        candidate, n = rel, 1
        stem, dot, suffix = rel.partition(".")
        while candidate in self._committed_files or (self._stage / candidate).exists():
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
        self._pending.append(dest)
        return rel

    def adopt(self, rel: str) -> str:
        """Register a file that a tool already wrote into :attr:`staging_dir` as ``rel``."""
        path = self._stage / rel
        if not path.is_file():
            raise ArtifactError(f"cannot adopt {rel}: no such file in {self._stage}")
        self._pending.append(path)
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
        """Hash ``files`` and add (or replace) a variant in the pending manifest."""
        entries = tuple(file_entry(self._stage, rel) for rel in files)
        variant = Variant(
            id=variant_id,
            format=format,
            precision=precision,
            files=entries,
            steps=tuple(steps),
            validation=validation,
            calibration=calibration,
            target=target,
        )
        self.manifest = self.manifest.with_variant(variant)
        return variant

    def set_manifest(self, **changes: object) -> None:
        """Change top-level manifest fields (labels, preprocessing, versions...)."""
        self.manifest = replace(self.manifest, **changes)  # type: ignore[arg-type]

    def commit(self) -> Artifact:
        """Write the manifest atomically and, for a new artifact, move it into place."""
        if self._done:
            raise ArtifactError("this ArtifactWriter was already committed or aborted")
        write_text_atomic(self._stage / MANIFEST_NAME, self.manifest.to_json())
        if self._new:
            replace_dir(self._stage, self.root)
        else:
            self._remove_orphans()
        self._done = True
        return Artifact(self.root, self.manifest)

    def _remove_orphans(self) -> None:
        """Delete files that the previous manifest listed and the new one no longer does."""
        keep = {f.path for v in self.manifest.variants for f in v.files}
        for rel in self._committed_files - keep:
            try:
                (self.root / rel).unlink()
            except FileNotFoundError:
                continue

    def abort(self) -> None:
        """Drop everything written by this writer; the previous artifact is untouched."""
        if self._done:
            return
        if self._new:
            shutil.rmtree(self._stage, ignore_errors=True)
        else:
            for p in self._pending:
                p.unlink(missing_ok=True)
        self._done = True

    def __enter__(self) -> ArtifactWriter:
        return self

    def __exit__(self, exc_type: object, *rest: object) -> None:
        if exc_type is not None or not self._done:
            self.abort()
