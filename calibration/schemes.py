"""Calibration sources by name: ``SCHEME:ARGUMENT`` strings, paths, and ``file.py:function`` callables.

:func:`from_spec` turns a command-line or config string into a
:class:`~infership.calibration.dataset.CalibrationSet`:

* ``SCHEME:ARGUMENT`` (or a bare ``SCHEME``) — a registered source. Built in: ``numpy:PATH`` (a ``.npy`` /
  ``.npz`` file or a directory of them) and ``images:FOLDER`` (an image folder, through the artifact's
  preprocessing). More come from :func:`register_source` or the ``infership.sources`` entry-point group
  (value: ``"package.module:factory"``).
* ``PATH`` — a ``.npy`` / ``.npz`` file, a directory of them, an image folder, or a ``.txt`` / ``.tsv``
  file of texts (one per line; ``label<TAB>text``) tokenized with the artifact's tokenizer (``text:PATH``
  names one explicitly).
* ``FILE.py:FUNCTION`` or ``MODULE:FUNCTION`` — a function returning a ``CalibrationSet`` or
  ``(inputs, labels)`` arrays (``inputs`` alone for unlabelled data; labels are class indices ``[n]`` or
  masks ``[n, H, W]``). It is called with those of
  ``preprocessing=``, ``class_names=`` and ``batch_size=`` that it declares.

A factory is called as ``factory(argument, preprocessing=..., class_names=..., batch_size=...)`` (and
``tokenizer=...`` when it declares it) and returns a ``CalibrationSet``.
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.util
import inspect
import logging
import os
import re
import sys
import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np
from infership.runtime.errors import InvalidInputError
from infership.runtime.manifest import Preprocessing
from infership.runtime.text import TextEncoder

from .arrays import ARRAY_SUFFIXES, to_numpy
from .dataset import UNNAMED, CalibrationSet
from .sources import ArraySource, from_image_folder, from_numpy
from .text import TEXT_SUFFIXES, from_text_file

__all__ = [
    "from_spec",
    "load_callable",
    "register_source",
    "registered_sources",
    "split_callable",
    "unregister_source",
]

log = logging.getLogger(__name__)

ENTRY_POINT_GROUP = "infership.sources"
#: ``factory(argument, *, preprocessing, class_names, batch_size) -> CalibrationSet``.
SourceFactory = Callable[..., CalibrationSet]
# At least two characters, so a Windows drive ("C:\\data") is never read as a scheme.
_SCHEME = re.compile(r"[a-z][a-z0-9+.\-_]+")
_MODULE = re.compile(r"[A-Za-z_]\w*(\.[A-Za-z_]\w*)*")
_OPTIONS = ("preprocessing", "class_names", "batch_size", "tokenizer")


@dataclass(frozen=True)
class SourceEntry:
    """A registered scheme: its factory (a callable, or ``"module:function"`` imported on first use)."""

    scheme: str
    factory: SourceFactory | str
    description: str


_BUILTIN = (
    SourceEntry(
        "numpy", "infership.calibration.schemes:_numpy_source", "a .npy/.npz file or a directory of them"
    ),
    SourceEntry(
        "images",
        "infership.calibration.schemes:_image_source",
        "an image folder, flat or one subfolder per class (through the artifact's preprocessing)",
    ),
    SourceEntry(
        "text",
        "infership.calibration.schemes:_text_source",
        "a .txt file, one text per line, or a .tsv file of label<TAB>text (through the artifact's tokenizer)",
    ),
)
_lock = threading.Lock()
_entries: dict[str, SourceEntry] | None = None


def _load_entries() -> dict[str, SourceEntry]:
    global _entries
    with _lock:
        if _entries is None:
            entries = {e.scheme: e for e in _BUILTIN}
            for ep in metadata.entry_points(group=ENTRY_POINT_GROUP):
                if ep.name in entries:
                    log.warning(
                        "entry point %s=%s ignored: %r is a built-in source", ep.name, ep.value, ep.name
                    )
                    continue
                entries[ep.name] = SourceEntry(ep.name, ep.value, f"from {ep.value}")
            _entries = entries
        return _entries


def register_source(scheme: str, factory: SourceFactory | str, *, description: str = "") -> None:
    """Make ``SCHEME:ARGUMENT`` strings resolve through ``factory``; registering a scheme again replaces it.

    Args:
        scheme: Lower-case name, at least two characters (letters, digits, ``+ . - _``).
        factory: ``factory(argument, *, preprocessing, class_names, batch_size) -> CalibrationSet``, or
            ``"module:function"`` naming one (imported on first use).
        description: One line for listings and error messages.

    Raises:
        InvalidInputError: The scheme is not a valid name.
    """
    if not _SCHEME.fullmatch(scheme):
        raise InvalidInputError(
            f"source scheme {scheme!r}: expected a lower-case name of two or more letters, digits, '+.-_'"
        )
    entries = _load_entries()
    with _lock:
        if scheme in entries:
            log.debug("source scheme %r registered again; the new factory replaces the old", scheme)
        entries[scheme] = SourceEntry(scheme, factory, description)


def unregister_source(scheme: str) -> None:
    """Forget a scheme registered with :func:`register_source` (built-in schemes stay).

    Raises:
        InvalidInputError: ``scheme`` is built in or not registered.
    """
    entries = _load_entries()
    with _lock:
        if scheme in {e.scheme for e in _BUILTIN} or scheme not in entries:
            raise InvalidInputError(
                f"source scheme {scheme!r}: expected a registered, non-built-in scheme; registered: "
                f"{', '.join(entries)}"
            )
        del entries[scheme]


def registered_sources() -> dict[str, str]:
    """Scheme → description of every registered source (built-in, entry points, :func:`register_source`)."""
    return {s: e.description for s, e in _load_entries().items()}


def from_spec(
    spec: str,
    *,
    preprocessing: Preprocessing | None = None,
    class_names: Sequence[str] | None = None,
    batch_size: int = 16,
    tokenizer: TextEncoder | None = None,
) -> CalibrationSet:
    """A calibration set from a command-line or config string (see the module docstring for the forms).

    Args:
        spec: ``SCHEME:ARGUMENT``, a path, ``FILE.py:FUNCTION`` or ``MODULE:FUNCTION``.
        preprocessing: The artifact's preprocessing (image sources need it).
        class_names: The model's class names (maps class folders to output indices).
        batch_size: Samples per batch.
        tokenizer: The artifact's :class:`~infership.runtime.text.TextEncoder` (text sources need it).

    Returns:
        The calibration set.

    Raises:
        InvalidInputError: An unknown scheme, a path that does not exist, a callable that cannot be loaded
            or returns something else, or an image folder for an artifact without preprocessing.
    """
    options = {
        "preprocessing": preprocessing,
        "class_names": class_names,
        "batch_size": batch_size,
        "tokenizer": tokenizer,
    }
    head, sep, argument = spec.partition(":")
    entries = _load_entries()
    # A bare name is a scheme only when no file or folder of that name exists ("images" may be a folder).
    if head in entries and (sep or not Path(spec).exists()):
        factory = _factory(entries[head])
        return _checked(factory(argument, **_declared(factory, options)), f"source {spec!r}", batch_size)
    parts = split_callable(spec)
    if parts is not None and parts[0].lower().endswith(".py"):
        return _call(load_callable(spec), spec, options)
    path = Path(spec)
    if path.exists():
        return _path_source(path, **options)
    if parts is not None and _module_exists(parts[0]):
        return _call(load_callable(spec), spec, options)
    schemes = ", ".join(f"{s}:" for s in entries)
    if sep and _SCHEME.fullmatch(head):
        raise InvalidInputError(
            f"calibration source {spec!r}: unknown scheme {head!r}; expected one of {schemes}, a path, "
            "FILE.py:FUNCTION or MODULE:FUNCTION"
        )
    raise InvalidInputError(
        f"calibration source {spec!r} not found: expected a .npy/.npz file, a directory of them, an image "
        f"folder, SCHEME:ARGUMENT with a registered scheme ({schemes}), FILE.py:FUNCTION or MODULE:FUNCTION"
    )


def split_callable(spec: str) -> tuple[str, str] | None:
    """Split ``FILE.py:FUNCTION`` or ``MODULE:FUNCTION`` into ``(target, function)``; ``None`` for other forms.

    Purely by form — nothing is imported and no file is looked at. The split is at the last ``:`` (so a
    Windows drive in the path stays in it). ``FUNCTION`` is a dotted name of Python identifiers
    (``build`` or ``Factory.create``). ``target`` is a file path ending in ``.py`` (any case; relative
    paths are not resolved), or a dotted module name of Python identifiers (``pkg.models``). Anything else —
    no colon, an empty side, a path that is not a ``.py`` file, a ``FILE.py`` without ``:FUNCTION`` — gives
    ``None``. A registered ``SCHEME:ARGUMENT`` may have the same form (``numpy:data.npz`` splits as
    ``("numpy", "data.npz")``): :func:`from_spec` tries registered schemes first.

    Examples: ``"examples/digits/data.py:train"`` → ``("examples/digits/data.py", "train")``;
    ``"my_pkg.models:build"`` → ``("my_pkg.models", "build")``; ``"data.npz"``, ``"images/"``,
    ``"a/b:c"`` → ``None``.
    """
    target, colon, attr = spec.rpartition(":")
    if not colon or not target or not _MODULE.fullmatch(attr):
        return None
    if target.lower().endswith(".py") or _MODULE.fullmatch(target):
        return target, attr
    return None


def load_callable(spec: str) -> Callable[..., Any]:
    """The function named by ``FILE.py:FUNCTION`` or ``MODULE:FUNCTION`` (split by :func:`split_callable`).

    A file is imported once per resolved path, under a name derived from it, so importing it again (its
    ``register_source`` calls included) finds the same module.

    Raises:
        InvalidInputError: ``spec`` has neither form, the file or module is missing or fails to import, or it
            has no such callable.
    """
    parts = split_callable(spec)
    if parts is None:
        raise InvalidInputError(f"{spec!r}: expected FILE.py:FUNCTION or MODULE:FUNCTION")
    target, attr = parts
    if target.lower().endswith(".py"):
        module = _import_file(Path(target), spec)
    else:
        try:
            module = importlib.import_module(target)
        except ImportError as exc:
            raise InvalidInputError(f"{spec!r}: cannot import module {target!r} ({exc})") from exc
    obj: Any = module
    for part in attr.split("."):
        obj = getattr(obj, part, None)
    if not callable(obj):
        raise InvalidInputError(f"{spec!r}: expected a function {attr!r} in {target}, found none")
    return obj


def import_file(path: str | os.PathLike[str]) -> Any:
    """A Python file imported as a module, once per resolved path: the same module a ``FILE.py:FUNCTION``
    source of that file gets (scripts that are not in a package use it to load their siblings).

    Raises:
        InvalidInputError: The file is missing or cannot be imported.
    """
    return _import_file(Path(path), os.fspath(path))


# ---------------------------------------------------------------------------------------------- internals
def _factory(entry: SourceEntry) -> SourceFactory:
    if callable(entry.factory):
        return entry.factory
    module_name, _, attr = entry.factory.partition(":")
    try:
        return getattr(importlib.import_module(module_name), attr)
    except (ImportError, AttributeError) as exc:
        raise InvalidInputError(
            f"source scheme {entry.scheme!r}: cannot load {entry.factory} ({exc})"
        ) from exc


def _module_exists(name: str) -> bool:
    try:
        return importlib.util.find_spec(name) is not None
    except (ImportError, ValueError):  # a missing parent package, or a module without a spec
        return False


def _import_file(path: Path, spec: str) -> Any:
    path = path.expanduser().resolve()
    if not path.is_file():
        raise InvalidInputError(f"{spec!r}: expected a Python file, got {path} (not found)")
    name = f"infership_source_{path.stem}_{hashlib.sha1(str(path).encode()).hexdigest()[:10]}"
    if name in sys.modules:
        return sys.modules[name]
    module_spec = importlib.util.spec_from_file_location(name, path)
    if module_spec is None or module_spec.loader is None:
        raise InvalidInputError(f"{spec!r}: cannot import {path}")
    module = importlib.util.module_from_spec(module_spec)
    sys.modules[name] = module
    try:
        module_spec.loader.exec_module(module)
    except BaseException:
        del sys.modules[name]  # a half-imported module must not be found next time
        raise
    return module


def _declared(fn: Callable[..., Any], options: Mapping[str, Any]) -> dict[str, Any]:
    """The options ``fn`` declares (all of them if it takes ``**kwargs``); ``tokenizer`` only when set, so
    factories written before it existed keep working."""
    try:
        params = inspect.signature(fn).parameters
    except (TypeError, ValueError):  # builtins and C functions may have no signature
        params = {}
    takes_all = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values())
    return {
        k: v for k, v in options.items() if k in params or (takes_all and (k != "tokenizer" or v is not None))
    }


def _call(fn: Callable[..., Any], spec: str, options: Mapping[str, Any]) -> CalibrationSet:
    result = fn(**_declared(fn, options))
    what = f"{spec!r}"
    if isinstance(result, CalibrationSet):
        return _checked(result, what, int(options["batch_size"]))
    inputs, labels = result if isinstance(result, tuple) and len(result) == 2 else (result, None)
    if isinstance(inputs, Mapping):
        arrays = {str(k): to_numpy(v) for k, v in inputs.items()}
    elif isinstance(inputs, np.ndarray) or type(inputs).__module__.startswith("torch"):
        arrays = {UNNAMED: to_numpy(inputs)}
    else:
        raise InvalidInputError(
            f"{what}: expected the function to return a CalibrationSet, (inputs, labels) or inputs, got "
            f"{type(result).__name__}"
        )
    desc = {
        "kind": "python",
        "spec": spec,
        "shapes": {k or "input": list(v.shape) for k, v in arrays.items()},
    }
    # ArraySource converts and checks the labels (class indices [n] or masks [n, H, W]).
    source = ArraySource([arrays], labels=labels, description=desc)
    return CalibrationSet(source, batch_size=int(options["batch_size"]))


def _checked(result: Any, what: str, batch_size: int) -> CalibrationSet:
    if not isinstance(result, CalibrationSet):
        raise InvalidInputError(
            f"{what}: expected a CalibrationSet from the factory, got {type(result).__name__}"
        )
    return result if result.batch_size == batch_size else result.with_batch_size(batch_size)


def _path_source(
    path: Path,
    *,
    preprocessing: Preprocessing | None,
    class_names: Sequence[str] | None,
    batch_size: int,
    tokenizer: TextEncoder | None = None,
) -> CalibrationSet:
    if path.is_file() and path.suffix.lower() in TEXT_SUFFIXES:
        return _text_source(str(path), class_names=class_names, batch_size=batch_size, tokenizer=tokenizer)
    if path.is_file() or any(q.suffix in ARRAY_SUFFIXES for q in path.iterdir()):
        return from_numpy(path, batch_size=batch_size)
    return _image_source(
        str(path), preprocessing=preprocessing, class_names=class_names, batch_size=batch_size
    )


def _numpy_source(argument: str, *, batch_size: int, **_: Any) -> CalibrationSet:
    if not argument:
        raise InvalidInputError(
            "source 'numpy:': expected numpy:PATH (a .npy/.npz file or folder), got no path"
        )
    return from_numpy(argument, batch_size=batch_size)


def _image_source(
    argument: str,
    *,
    preprocessing: Preprocessing | None,
    class_names: Sequence[str] | None,
    batch_size: int,
) -> CalibrationSet:
    if not argument:
        raise InvalidInputError("source 'images:': expected images:FOLDER, got no folder")
    if preprocessing is None:
        raise InvalidInputError(
            f"{argument} is an image folder, but the artifact records no preprocessing to turn images into "
            "model inputs; export with preprocessing, or give .npy/.npz data"
        )
    return from_image_folder(argument, preprocessing, class_names=class_names, batch_size=batch_size)


def _text_source(
    argument: str,
    *,
    class_names: Sequence[str] | None = None,
    batch_size: int,
    tokenizer: TextEncoder | None = None,
    **_: Any,
) -> CalibrationSet:
    if not argument:
        raise InvalidInputError("source 'text:': expected text:PATH (a .txt or .tsv file), got no path")
    if tokenizer is None:
        raise InvalidInputError(
            f"{argument} holds texts, but the artifact records no tokenizer to turn them into model inputs; "
            "export the model with its tokenizer (infership export hf:PATH), or give .npy/.npz token data"
        )
    return from_text_file(argument, tokenizer, class_names=class_names, batch_size=batch_size)
