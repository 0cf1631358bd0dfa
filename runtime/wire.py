"""The HTTP prediction protocol, both ends: what ``infership serve`` accepts and the ``http`` backend sends.

``POST /predict`` takes one of:

- ``application/json``: ``{"inputs": {name: nested lists}}``; values are converted to each input's dtype;
- ``application/x-npy``: one ``.npy`` array, for a single-input model;
- ``application/x-npz``: an ``.npz`` archive with one array per input name (exact dtypes, several inputs);
- ``image/*``: one encoded image, when the artifact records preprocessing;
- ``text/plain``: texts, one per line (UTF-8), or JSON ``{"texts": [...]}``, when the artifact carries a
  tokenizer.

The answer is ``{"outputs": {name: nested lists}}`` (JSON), or an ``.npz`` archive when the request's
``Accept`` header asks for ``application/x-npz``. A request the model cannot take gets a 4xx status with
``{"error": type, "detail": message}``. Arrays are read with ``allow_pickle=False``.
"""

from __future__ import annotations

import io
import json
import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from .errors import InferenceError, InvalidInputError
from .manifest import Preprocessing
from .spec import TensorSpec

__all__ = [
    "JSON",
    "NPY",
    "NPZ",
    "decode_request",
    "decode_response",
    "encode_request",
    "encode_response",
    "UnsupportedMediaType",
]

JSON = "application/json"
NPY = "application/x-npy"
NPZ = "application/x-npz"


class UnsupportedMediaType(InvalidInputError):
    """The body's content type is not one this model can take (HTTP 415)."""


def _media(content_type: str | None) -> str:
    return (content_type or "").split(";", 1)[0].strip().lower()


def encode_request(feeds: Mapping[str, np.ndarray]) -> tuple[bytes, str]:
    """Feeds as a request body: ``.npy`` for one input, ``.npz`` for several. Returns body and type."""
    buf = io.BytesIO()
    if len(feeds) == 1:
        np.save(buf, np.ascontiguousarray(next(iter(feeds.values()))), allow_pickle=False)
        return buf.getvalue(), NPY
    np.savez(buf, **{k: np.ascontiguousarray(v) for k, v in feeds.items()})
    return buf.getvalue(), NPZ


def decode_request(
    body: bytes,
    content_type: str | None,
    specs: Sequence[TensorSpec],
    preprocessing: Preprocessing | None = None,
    *,
    text: bool = False,
) -> Any:
    """A request body as an argument for ``Predictor.predict``.

    Args:
        body: The raw body.
        content_type: The request's ``Content-Type`` header.
        specs: The model's input specs.
        preprocessing: The artifact's preprocessing (images are accepted only with it).
        text: Whether the artifact carries a tokenizer (texts are accepted only then).

    Returns:
        A mapping name → array, one array, a PIL image, or a list of texts.

    Raises:
        UnsupportedMediaType: A content type this model cannot take.
        InvalidInputError: A body that does not parse, or names/values that do not fit the model.
    """
    media = _media(content_type)
    if not body:
        raise InvalidInputError("empty request body")
    if media in ("", JSON, "text/json"):
        return _from_json(body, specs, text)
    if media == NPY:
        if len(specs) != 1:
            names = [s.name for s in specs]
            raise InvalidInputError(
                f"an .npy body is for single-input models; this one takes {names}: send JSON or .npz"
            )
        return _load_array(body, "npy")
    if media == NPZ:
        return _load_array(body, "npz")
    if media.startswith("image/"):
        if preprocessing is None:
            raise UnsupportedMediaType(
                "this artifact records no preprocessing, so it cannot take raw images: send tensors as JSON "
                "or .npy"
            )
        return _open_image(body)
    if media.startswith("text/"):
        if not text:
            raise UnsupportedMediaType(_NO_TOKENIZER)
        try:
            lines = [line for line in body.decode("utf-8").splitlines() if line.strip()]
        except UnicodeDecodeError as exc:
            raise InvalidInputError(f"the text is not UTF-8: {exc}") from exc
        if not lines:
            raise InvalidInputError("no text: send one text per line")
        return lines
    raise UnsupportedMediaType(f"unsupported content type {media!r}; send {JSON}, {NPY}, {NPZ} or image/*")


_NO_TOKENIZER = (
    "this artifact records no tokenizer, so it cannot take raw text: send token ids as JSON or .npz"
)


def _from_json(body: bytes, specs: Sequence[TensorSpec], text: bool) -> Any:
    try:
        doc = json.loads(body)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise InvalidInputError(f"the body is not valid JSON: {exc}") from exc
    if isinstance(doc, dict) and "texts" in doc:
        if not text:
            raise UnsupportedMediaType(_NO_TOKENIZER)
        texts = doc["texts"]
        if not (isinstance(texts, list) and texts and all(isinstance(t, str) for t in texts)):
            raise InvalidInputError('expected {"texts": [one or more strings]}')
        return texts
    if not isinstance(doc, dict) or not isinstance(doc.get("inputs"), dict):
        raise InvalidInputError('expected a JSON object {"inputs": {name: nested lists}}')
    values = doc["inputs"]
    by_name = {s.name: s for s in specs}
    unknown = sorted(set(values) - set(by_name))
    missing = sorted(set(by_name) - set(values))
    if unknown or missing:
        raise InvalidInputError(
            f"expected inputs {list(by_name)}"
            + (f"; missing {missing}" if missing else "")
            + (f"; unexpected {unknown}" if unknown else "")
        )
    out = {}
    for name, value in values.items():
        try:
            out[name] = np.asarray(value, dtype=by_name[name].dtype)
        except (ValueError, TypeError) as exc:
            raise InvalidInputError(
                f"input {name!r}: not a regular nested list of numbers for dtype {by_name[name].dtype} ({exc})"
            ) from exc
    return out


def _npy_view(body: bytes) -> np.ndarray | None:
    """An ``.npy`` body's array read in place — no copy of the data (read-only, like the body) — or
    ``None`` where ``np.load`` must decide (another header version, object arrays, a body of another
    length, data not aligned for its dtype)."""
    from numpy.lib import format as npy

    f = io.BytesIO(body)
    try:
        version = npy.read_magic(f)
        if version == (1, 0):
            shape, fortran, dtype = npy.read_array_header_1_0(f)
        elif version == (2, 0):
            shape, fortran, dtype = npy.read_array_header_2_0(f)
        else:
            return None
    except (ValueError, OSError, EOFError):
        return None
    count = math.prod(shape)
    if dtype.hasobject or len(body) - f.tell() != count * dtype.itemsize:
        return None
    flat = np.frombuffer(body, dtype=dtype, count=count, offset=f.tell())
    if not flat.flags.aligned:  # a header not padded as numpy pads it: an aligned copy, as np.load makes
        return None
    return flat.reshape(shape[::-1]).T if fortran else flat.reshape(shape)


def _load_array(body: bytes, kind: str) -> Any:
    if kind == "npy" and (view := _npy_view(body)) is not None:
        return view
    try:
        loaded = np.load(io.BytesIO(body), allow_pickle=False)
    except (ValueError, OSError, EOFError) as exc:
        raise InvalidInputError(f"the body is not a valid .{kind} file: {exc}") from exc
    if kind == "npy":
        if not isinstance(loaded, np.ndarray):
            raise InvalidInputError("the body is an .npz archive; send it as application/x-npz")
        return loaded
    if isinstance(loaded, np.ndarray):
        raise InvalidInputError("the body is a single .npy array; send it as application/x-npy")
    with loaded:
        return {k: loaded[k] for k in loaded.files}


def _open_image(body: bytes) -> Any:
    try:
        from PIL import Image, UnidentifiedImageError
    except ImportError as exc:  # pragma: no cover - Pillow comes with the serve extra
        raise UnsupportedMediaType("raw images need Pillow: pip install pillow") from exc
    try:
        image = Image.open(io.BytesIO(body))
        image.load()
    except (UnidentifiedImageError, OSError) as exc:
        raise InvalidInputError(f"the body is not an image Pillow can read: {exc}") from exc
    return image


def encode_response(outputs: Mapping[str, np.ndarray], accept: str | None) -> tuple[bytes, str]:
    """Outputs as a response body: ``.npz`` when ``accept`` asks for it, else JSON."""
    if NPZ in (accept or ""):
        buf = io.BytesIO()
        np.savez(buf, **{k: np.asarray(v) for k, v in outputs.items()})
        return buf.getvalue(), NPZ
    doc = {"outputs": {k: np.asarray(v).tolist() for k, v in outputs.items()}}
    return json.dumps(doc).encode(), JSON


def decode_response(body: bytes, content_type: str | None) -> dict[str, np.ndarray]:
    """A response body (JSON or ``.npz``) as output name → array.

    Raises:
        InferenceError: The body is not a prediction response.
    """
    try:
        if _media(content_type) == NPZ:
            return _load_array(body, "npz")
        doc = json.loads(body)
        return {k: np.asarray(v) for k, v in doc["outputs"].items()}
    except (InvalidInputError, json.JSONDecodeError, KeyError, TypeError, AttributeError) as exc:
        raise InferenceError(f"not a prediction response: {body[:200]!r}") from exc
