"""What an ONNX file declares: its input and output specs, and the external-data files it reads.

The specs are read with the ``onnx`` package (bare ``.onnx`` files only). The external-data locations are
found by walking the protobuf wire format directly, so that checking an artifact needs no ``onnx``
package: a runtime-only install verifies every file a model makes the runtime read.
"""

from __future__ import annotations

import logging
import mmap
import os
import posixpath
from pathlib import Path
from typing import Any

from .errors import ArtifactError, IntegrityError
from .integrity import check_relpath, confined, sha256_file
from .manifest import FileEntry, Variant
from .spec import Dim, TensorSpec

log = logging.getLogger(__name__)

# Protobuf field numbers (onnx.proto) of the messages that can hold tensors, and where they nest.
_MODEL, _GRAPH, _NODE, _ATTR, _TENSOR, _SPARSE, _FUNCTION, _TRAINING = range(8)
_CHILDREN: dict[int, dict[int, int]] = {
    _MODEL: {7: _GRAPH, 20: _TRAINING, 25: _FUNCTION},
    _TRAINING: {1: _GRAPH, 2: _GRAPH},
    _GRAPH: {1: _NODE, 5: _TENSOR, 15: _SPARSE},
    _NODE: {5: _ATTR},
    _ATTR: {5: _TENSOR, 6: _GRAPH, 10: _TENSOR, 11: _GRAPH, 22: _SPARSE, 23: _SPARSE},
    _FUNCTION: {7: _NODE, 11: _ATTR},
    _SPARSE: {1: _TENSOR, 2: _TENSOR},
}
_TENSOR_NAME, _TENSOR_EXTERNAL = 8, 13
# Nesting deeper than this is not a model any exporter writes; refusing it bounds the walk.
_MAX_DEPTH = 64


class _Malformed(Exception):
    pass


def _varint(buf: memoryview, pos: int, end: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        if pos >= end or shift > 63:
            raise _Malformed("truncated or overlong varint")
        b = buf[pos]
        pos += 1
        value |= (b & 0x7F) << shift
        if b < 0x80:
            return value, pos
        shift += 7


def _fields(buf: memoryview, start: int, end: int):
    """Yield ``(field number, payload start, payload end)`` for the length-delimited fields of one message;
    other wire types are skipped. Every step advances, so a malformed buffer ends in _Malformed, never a
    loop."""
    pos = start
    while pos < end:
        key, pos = _varint(buf, pos, end)
        wire = key & 7
        if wire == 0:
            _, pos = _varint(buf, pos, end)
        elif wire == 1:
            pos += 8
        elif wire == 5:
            pos += 4
        elif wire == 2:
            n, pos = _varint(buf, pos, end)
            if pos + n > end:
                raise _Malformed("a field runs past the end of its message")
            yield key >> 3, pos, pos + n
            pos += n
        else:
            raise _Malformed(f"unsupported wire type {wire}")
        if pos > end:
            raise _Malformed("a field runs past the end of its message")


def _text(buf: memoryview, start: int, end: int) -> str:
    try:
        return bytes(buf[start:end]).decode("utf-8")
    except UnicodeDecodeError as exc:
        raise _Malformed("a string field is not UTF-8") from exc


def _external_location(buf: memoryview, start: int, end: int) -> tuple[str, str] | None:
    """``(tensor name, location)`` when this TensorProto keeps its data in an external file."""
    name, location = "", None
    for field, a, b in _fields(buf, start, end):
        if field == _TENSOR_NAME:
            name = _text(buf, a, b)
        elif field == _TENSOR_EXTERNAL:
            key = value = None
            for f, c, d in _fields(buf, a, b):
                if f == 1:
                    key = _text(buf, c, d)
                elif f == 2:
                    value = _text(buf, c, d)
            if key == "location":
                location = value or ""
    return None if location is None else (name, location)


def external_data_locations(path: Path) -> list[tuple[str, str]]:
    """The external-data files an ONNX model refers to: ``(tensor name, location)`` per tensor, locations
    as written in the file (relative to the model's directory by the ONNX rules).

    Walks initializers, sparse initializers, constants in node attributes, subgraphs (If, Loop, Scan),
    functions and training graphs.

    Raises:
        ArtifactError: The file is not a well-formed protobuf.
    """
    # Mapped, not read: the walk jumps over every tensor's raw bytes by their length, so the pages holding
    # the weights (nearly all of a large model) are never touched and the check costs next to nothing on
    # the load path, where the runtime reads the same file right after.
    try:
        with open(path, "rb") as fh:
            size = os.fstat(fh.fileno()).st_size
            mapped = mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ) if size else None
    except (OSError, ValueError) as exc:
        raise ArtifactError(
            f"{path}: cannot read the model ({getattr(exc, 'strerror', None) or exc})"
        ) from exc
    try:
        buf = memoryview(mapped if mapped is not None else b"")
        try:
            return _walk(buf, path)
        finally:
            buf.release()
    finally:
        if mapped is not None:
            mapped.close()


def _walk(buf: memoryview, path: Path) -> list[tuple[str, str]]:
    found: list[tuple[str, str]] = []
    stack = [(_MODEL, 0, len(buf), 0)]
    try:
        while stack:
            kind, start, end, depth = stack.pop()
            if depth > _MAX_DEPTH:
                raise _Malformed(f"messages nest deeper than {_MAX_DEPTH} levels")
            if kind == _TENSOR:
                loc = _external_location(buf, start, end)
                if loc is not None:
                    found.append(loc)
                continue
            children = _CHILDREN[kind]
            for field, a, b in _fields(buf, start, end):
                child = children.get(field)
                if child is not None:
                    stack.append((child, a, b, depth + 1))
    except _Malformed as exc:
        raise ArtifactError(f"{path}: not a readable ONNX model ({exc})") from exc
    return found


def read_onnx_specs(path: Path) -> tuple[tuple[TensorSpec, ...], tuple[TensorSpec, ...]]:
    """Input and output specs of an ONNX file, read with the ``onnx`` package (weights not loaded).

    Dimension encodings are read as ONNX Runtime and OpenVINO read them: ``dim_value`` -1 (written by
    some exporters for "unknown") is a dynamic axis, ``dim_value`` 0 a fixed size 0, an empty or absent
    ``dim_param`` an unnamed dynamic axis, and an absent shape an unknown rank. Inputs backed by an
    initializer (overridable defaults) are not inputs the caller must feed. An output listed twice is one
    output.

    Raises:
        ArtifactError: The file is not a readable ONNX model, has no inputs or outputs, or an input or
            output is not a tensor of a numpy element type (sequences, maps, optionals, bfloat16...).
    """
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

    def spec(vi: Any, role: str) -> TensorSpec:
        kind = vi.type.WhichOneof("value")
        if kind != "tensor_type":
            raise ArtifactError(
                f"{path.name}: {role} {vi.name!r} is a {kind or 'untyped value'}, not a tensor; "
                "infership runs models whose inputs and outputs are tensors"
            )
        tt = vi.type.tensor_type
        dims: tuple[Dim, ...] | None = None
        if tt.HasField("shape"):
            dims = tuple(_dim_of(d, vi.name, role) for d in tt.shape.dim)
        try:
            return TensorSpec(vi.name, helper.tensor_dtype_to_np_dtype(tt.elem_type).name, dims)
        except (KeyError, TypeError, ValueError) as exc:
            raise ArtifactError(
                f"{path.name}: {role} {vi.name!r} has element type {_type_name(onnx, tt.elem_type)}, which "
                f"has no numpy equivalent infership can feed or return ({exc})"
            ) from exc

    inputs = tuple(spec(v, "input") for v in model.graph.input if v.name not in initializers)
    outputs: list[TensorSpec] = []
    for v in model.graph.output:
        if any(o.name == v.name for o in outputs):
            continue  # the same tensor listed twice: one output (a mapping holds one value per name)
        outputs.append(spec(v, "output"))
    if not inputs or not outputs:
        raise ArtifactError(f"{path}: the graph has no inputs or no outputs")
    return inputs, tuple(outputs)


def _type_name(onnx: Any, number: int) -> str:
    try:
        return str(onnx.TensorProto.DataType.Name(number))
    except ValueError:  # not a type this onnx knows
        return f"#{number}"


def _dim_of(d: Any, name: str, role: str) -> Dim:
    if d.HasField("dim_value"):
        if d.dim_value < 0:
            # Some exporters write -1 for "unknown"; both runtimes then accept any size there.
            return None
        if d.dim_value == 0:
            log.warning(
                "%s %r declares a dimension of size 0: ONNX Runtime and OpenVINO read it as a fixed 0, "
                "so only empty tensors fit there (an exporter that meant 'unknown' should write a name)",
                role,
                name,
            )
        return int(d.dim_value)
    return d.dim_param or None


def external_rel(base: str, location: str, what: str) -> str:
    """An external-data ``location`` (relative to the model's folder ``base`` inside the artifact) as a
    path inside the artifact.

    Raises:
        IntegrityError: The location is absolute or leads out of the artifact.
    """
    joined = location
    if location and not location.startswith("/"):
        joined = posixpath.normpath(posixpath.join(base, location))
    try:
        return check_relpath(joined, what=f"{what}: external data location")
    except ArtifactError as exc:
        raise IntegrityError(str(exc)) from exc


def check_external_data(model: Path, variant: Variant) -> None:
    """Every external-data file the ONNX ``model`` (the variant's first file) reads must be one of the
    variant's files, so that it lies inside the artifact and its hash is checked.

    Raises:
        IntegrityError: A location leads out of the artifact or names a file the manifest does not list.
    """
    rel_model = variant.files[0].path
    listed = {f.path for f in variant.files}
    for tensor, location in external_data_locations(model):
        what = f"variant {variant.id!r}: {rel_model} tensor {tensor!r}"
        if external_rel(posixpath.dirname(rel_model), location, what) not in listed:
            raise IntegrityError(
                f"{what} keeps its data in {location!r}, a file the manifest does not list (its hash would "
                "go unchecked); list it among the variant's files"
            )


def bare_onnx_files(path: Path) -> tuple[FileEntry, ...]:
    """The files a bare ``.onnx`` model reads (itself first, then its external data), hashed.

    Raises:
        IntegrityError: External data lies outside the model's folder (a ``..``, an absolute path, or a
            symlink leading out), or is missing.
    """
    folder = path.parent
    entries = [FileEntry(path.name, sha256_file(path), path.stat().st_size)]
    for tensor, location in external_data_locations(path):
        rel = external_rel("", location, f"{path.name}: tensor {tensor!r}")
        real = confined(folder, rel, what=f"{path.name}: external data of tensor {tensor!r}:")
        if all(e.path != rel for e in entries):
            entries.append(FileEntry(rel, sha256_file(real), real.stat().st_size))
    return tuple(entries)
