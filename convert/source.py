"""Load the model to convert from whatever the user has.

Accepted sources:

- an ``nn.Module`` (or any ``torch.jit.ScriptModule`` / ``torch.export.ExportedProgram``) object;
- ``"torchvision:NAME"``: a torchvision architecture built with ``weights=None`` and, for segmenters and
  detectors, ``weights_backbone=None``: nothing is downloaded, ever. Builder arguments follow a ``?``
  (``torchvision:fcn_resnet50?aux_loss=false``); asking for pretrained weights there is refused with how
  to load a checkpoint instead;
- ``"module:callable"`` or ``"path/to/file.py:callable"``: a factory that returns the model;
- a TorchScript file (``torch.jit.save``);
- a ``torch.export`` program (``.pt2``, ``torch.export.save``);
- a checkpoint holding a ``state_dict`` (bare, or under ``state_dict`` / ``model_state_dict`` / ``model``),
  together with ``arch=`` (``"torchvision:NAME"`` or ``"module:callable"``);
- ``"hf:PATH"``: a Hugging Face text model saved on disk, with its tokenizer (:mod:`infership.convert.hf`).

Checkpoints are read with ``torch.load(weights_only=True)``: tensors and plain containers only. A file that
needs arbitrary unpickling (a whole pickled ``nn.Module``, custom classes) is refused unless the caller opts
in with ``allow_pickle=True`` (CLI: ``--allow-pickle``), because unpickling runs code chosen by whoever made
the file.
"""

from __future__ import annotations

import importlib
import importlib.util
import inspect
import logging
import os
import pickle
import re
import sys
import time
import zipfile
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from infership.runtime import ConversionError, Step

from .hf import TextModel, is_hf_source, load_hf
from .torchvision_models import build_torchvision, guess_num_classes

log = logging.getLogger(__name__)

_STATE_DICT_KEYS = ("state_dict", "model_state_dict", "model", "net", "module")
_PREFIXES = ("module.", "_orig_mod.")


@dataclass(frozen=True)
class ModelSource:
    """A loaded model and where it came from.

    Attributes:
        model: A callable torch module to run as the reference (``nn.Module``, ``ScriptModule`` or the
            module of an exported program), in eval mode.
        kind: ``module``, ``torchvision``, ``factory``, ``checkpoint``, ``torchscript``, ``torch-export`` or
            ``hf``.
        description: Human-readable origin, e.g. ``"torchvision:resnet18 (num_classes=10)"``.
        program: The ``ExportedProgram`` when the source was one (``.pt2`` file or object).
        file: The source file, when the model came from a file.
        input_names: Parameter names of ``forward``, when they can be read.
        step: The ``load`` step for the manifest.
        notes: Anything changed while loading (stripped key prefixes...), for the manifest.
        text: For a text model (``hf:PATH``): its token inputs, task, tokenizer and ranges.
    """

    model: Any
    kind: str
    description: str
    program: Any = None
    file: Path | None = None
    input_names: tuple[str, ...] = ()
    step: Step = field(default_factory=lambda: Step("load"))
    notes: tuple[str, ...] = ()
    text: TextModel | None = None


def load_model_source(
    source: Any,
    *,
    arch: str | None = None,
    num_classes: int | None = None,
    allow_pickle: bool = False,
    text_options: Mapping[str, Any] | None = None,
) -> ModelSource:
    """Turn a model object, a spec string or a file into a :class:`ModelSource`.

    Args:
        source: An ``nn.Module`` / ``ScriptModule`` / ``ExportedProgram``, ``"torchvision:NAME"``,
            ``"module:callable"``, ``"file.py:callable"``, or the path of a TorchScript file, a ``.pt2``
            program or a state_dict checkpoint.
        arch: For a state_dict checkpoint: the architecture to load it into (``"torchvision:NAME"`` or
            ``"module:callable"``).
        num_classes: Passed to torchvision builders and factories as ``num_classes=``.
        allow_pickle: Let ``torch.load`` unpickle arbitrary objects. Only for files from a trusted source.
        text_options: For ``hf:PATH``: ``task``, ``pooling``, ``normalize``, ``max_length`` (see
            :func:`infership.convert.hf.load_hf`); refused for other sources.

    Returns:
        The loaded model, in eval mode, with its provenance.

    Raises:
        ConversionError: The source cannot be found, read or built; or a checkpoint needs arbitrary
            unpickling and ``allow_pickle`` is False; or the state_dict does not fit ``arch``.
    """
    t0 = time.perf_counter()
    torch = _import_torch()
    params: dict[str, Any] = {"source": _describe_source(source)}
    if arch is not None:
        params["arch"] = arch
    if num_classes is not None:
        params["num_classes"] = num_classes
    options = {k: v for k, v in (text_options or {}).items() if v is not None}
    if is_hf_source(source):
        if arch is not None or num_classes is not None:
            raise ConversionError(f"{source}: arch and num_classes do not apply to hf: sources")
        model, text, facts = load_hf(source, **options)
        loaded = ModelSource(model=model, kind="hf", description=source, text=text)
        params.update({k: (v.value if hasattr(v, "value") else v) for k, v in options.items()})
        params["read"] = facts
    elif options:
        raise ConversionError(f"{sorted(options)} apply only to hf: sources, not {_describe_source(source)}")
    elif isinstance(source, (str, os.PathLike)) and Path(source).is_file():
        loaded = _load_file(Path(source), arch=arch, num_classes=num_classes, allow_pickle=allow_pickle)
    elif isinstance(source, str):
        if arch is not None:
            raise ConversionError(
                f"arch={arch!r} is only used with a checkpoint file; the source is {source!r}"
            )
        if ":" not in source:
            raise ConversionError(
                f"model source {source!r}: expected an existing file, 'torchvision:NAME' or 'module:callable'"
                " (no such file either)"
            )
        model = _build_arch(source, num_classes)
        kind = "torchvision" if source.startswith("torchvision:") else "factory"
        loaded = ModelSource(model=model, kind=kind, description=_with_classes(source, num_classes))
    elif isinstance(source, os.PathLike):
        raise ConversionError(f"model file not found: {os.fspath(source)}")
    elif isinstance(source, torch.export.ExportedProgram):
        loaded = ModelSource(
            model=source.module(), kind="torch-export", description="ExportedProgram", program=source
        )
    elif isinstance(source, torch.nn.Module):
        kind = "torchscript" if isinstance(source, torch.jit.ScriptModule) else "module"
        loaded = ModelSource(model=source, kind=kind, description=type(source).__name__)
    else:
        raise ConversionError(
            "expected an nn.Module, ExportedProgram, a file path, 'torchvision:NAME' or 'module:callable', "
            f"got {type(source).__name__}"
        )
    model = loaded.model
    if isinstance(model, torch.nn.Module) and loaded.program is None:
        model.eval()
    names = loaded.input_names or _forward_names(loaded)
    result = {"kind": loaded.kind, "description": loaded.description}
    if loaded.notes:
        result["notes"] = list(loaded.notes)
    step = Step("load", params=params, result=result, seconds=round(time.perf_counter() - t0, 3))
    log.info("loaded %s (%s)", loaded.description, loaded.kind)
    return ModelSource(
        model=model,
        kind=loaded.kind,
        description=loaded.description,
        program=loaded.program,
        file=loaded.file,
        input_names=loaded.text.input_names if loaded.text else names,
        step=step,
        notes=loaded.notes,
        text=loaded.text,
    )


def _import_torch() -> Any:
    try:
        import torch
    except ImportError as exc:
        raise ConversionError("converting needs PyTorch: pip install 'infership[torch,convert]'") from exc
    return torch


def _describe_source(source: Any) -> str:
    if isinstance(source, (str, os.PathLike)):
        return os.fspath(source)
    return type(source).__name__


def _with_classes(spec: str, num_classes: int | None) -> str:
    return f"{spec} (num_classes={num_classes})" if num_classes is not None else spec


def _forward_names(loaded: ModelSource) -> tuple[str, ...]:
    """Names of ``forward``'s positional parameters (``image``, ``extra``...), when Python can see them."""
    if loaded.kind in ("torchscript", "torch-export"):
        return ()
    try:
        sig = inspect.signature(loaded.model.forward)
    except (TypeError, ValueError, AttributeError):
        return ()
    names = []
    for p in sig.parameters.values():
        if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD):
            names.append(p.name)
        elif p.kind is p.VAR_POSITIONAL:
            return ()
    return tuple(names)


# ---------------------------------------------------------------------------------------------- factories
def _build_arch(spec: str, num_classes: int | None) -> Any:
    torch = _import_torch()
    prefix, _, name = spec.partition(":")
    if prefix == "torchvision":
        return build_torchvision(spec, name, num_classes)
    factory = _resolve_callable(spec)
    kwargs = {"num_classes": num_classes} if num_classes is not None else {}
    try:
        model = factory(**kwargs)
    except TypeError as exc:
        raise ConversionError(
            f"{spec}: calling the factory with {kwargs or 'no arguments'} failed: {exc}"
        ) from exc
    if isinstance(model, torch.export.ExportedProgram):
        return model.module()
    if not isinstance(model, torch.nn.Module):
        raise ConversionError(
            f"{spec}: the factory returned {type(model).__name__}, expected a torch nn.Module"
        )
    return model


def _resolve_callable(spec: str) -> Any:
    """``module:attr.path`` or ``file.py:attr`` → the object. Importing runs that module's code."""
    module_name, _, attr = spec.rpartition(":")
    if not module_name or not attr:
        raise ConversionError(f"{spec!r}: expected 'module:callable' or 'file.py:callable'")
    if module_name.endswith(".py"):
        path = Path(module_name)
        if not path.is_file():
            raise ConversionError(f"{spec!r}: file {path} not found")
        mod_name = f"_infership_user_{re.sub(r'[^0-9a-zA-Z_]', '_', path.stem)}"
        spec_obj = importlib.util.spec_from_file_location(mod_name, path)
        if spec_obj is None or spec_obj.loader is None:
            raise ConversionError(f"{spec!r}: cannot import {path}")
        module = importlib.util.module_from_spec(spec_obj)
        sys.modules[mod_name] = module
        spec_obj.loader.exec_module(module)
    else:
        try:
            module = importlib.import_module(module_name)
        except ImportError as exc:
            raise ConversionError(f"{spec!r}: cannot import module {module_name!r} ({exc})") from exc
    obj: Any = module
    for part in attr.split("."):
        try:
            obj = getattr(obj, part)
        except AttributeError as exc:
            raise ConversionError(f"{spec!r}: {module_name} has no attribute {attr!r}") from exc
    if not callable(obj):
        raise ConversionError(f"{spec!r}: {attr} is a {type(obj).__name__}, not callable")
    return obj


# ---------------------------------------------------------------------------------------------- files
def _zip_kind(path: Path) -> str | None:
    """``torchscript``, ``torch-export``, ``torch-save`` (a zip torch.save file) or None (not a zip)."""
    if not zipfile.is_zipfile(path):
        return None
    with zipfile.ZipFile(path) as zf:
        names = zf.namelist()
    if any(n.endswith("/constants.pkl") or "/code/__torch__/" in n for n in names):
        return "torchscript"
    if any(n.endswith("/archive_format") or n.endswith("/models/model.json") for n in names):
        return "torch-export"
    return "torch-save"


def _load_file(path: Path, *, arch: str | None, num_classes: int | None, allow_pickle: bool) -> ModelSource:
    torch = _import_torch()
    kind = _zip_kind(path)
    if kind in ("torchscript", "torch-export") and arch is not None:
        raise ConversionError(
            f"{path.name} is a {kind} program; arch={arch!r} applies only to state_dict checkpoints"
        )
    if kind == "torchscript":
        try:
            model = torch.jit.load(os.fspath(path), map_location="cpu")
        except (
            Exception
        ) as exc:  # torch.jit.load raises many unrelated types for a bad file: translated below
            raise ConversionError(f"{path}: not a loadable TorchScript file ({_first_line(exc)})") from exc
        return ModelSource(model=model, kind="torchscript", description=f"TorchScript {path.name}", file=path)
    if kind == "torch-export":
        try:
            program = torch.export.load(os.fspath(path))
        except Exception as exc:  # torch.export.load likewise: translated below
            raise ConversionError(
                f"{path}: not a loadable torch.export program ({_first_line(exc)})"
            ) from exc
        return ModelSource(
            model=program.module(),
            kind="torch-export",
            description=f"torch.export {path.name}",
            program=program,
            file=path,
        )
    return _load_checkpoint(path, arch=arch, num_classes=num_classes, allow_pickle=allow_pickle)


def _load_checkpoint(
    path: Path, *, arch: str | None, num_classes: int | None, allow_pickle: bool
) -> ModelSource:
    torch = _import_torch()
    try:
        obj = torch.load(os.fspath(path), map_location="cpu", weights_only=not allow_pickle)
    except pickle.UnpicklingError as exc:
        detail = _unpickle_detail(exc)
        raise ConversionError(
            f"{path.name} cannot be loaded safely: it contains Python objects beyond tensors and plain "
            f"containers ({detail}). Loading it would unpickle them, which runs code chosen by whoever made the "
            "file. Prefer saving model.state_dict() and passing --arch; if you trust the file, opt in with "
            "--allow-pickle (API: allow_pickle=True)."
        ) from exc
    except (RuntimeError, OSError, EOFError, ValueError) as exc:
        raise ConversionError(f"{path}: not a readable PyTorch file ({_first_line(exc)})") from exc
    notes: list[str] = []
    if isinstance(obj, torch.nn.Module):
        if arch is not None:
            raise ConversionError(
                f"{path.name} holds a whole model ({type(obj).__name__}); drop arch={arch!r}"
            )
        return ModelSource(
            model=obj,
            kind="checkpoint",
            description=f"pickled {type(obj).__name__} {path.name}",
            file=path,
            notes=("loaded with allow_pickle=True",),
        )
    state = _find_state_dict(obj, path)
    state, stripped = _strip_prefix(state)
    if stripped:
        notes.append(f"stripped key prefix {stripped!r}")
    if arch is None:
        raise ConversionError(
            f"{path.name} holds a state_dict ({len(state)} tensors) but no architecture; pass "
            "--arch torchvision:NAME or --arch module:callable (API: arch=...)"
        )
    if num_classes is None and arch.startswith("torchvision:"):
        num_classes = guess_num_classes(state)
        if num_classes is not None:
            notes.append(f"num_classes={num_classes} read from the last layer's weight")
    model = _build_arch(arch, num_classes)
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        raise ConversionError(f"{path.name} does not fit {arch}: {_first_line(exc, 600)}") from exc
    if allow_pickle:
        notes.append("loaded with allow_pickle=True")
    return ModelSource(
        model=model,
        kind="checkpoint",
        description=f"{_with_classes(arch, num_classes)} + {path.name}",
        file=path,
        notes=tuple(notes),
    )


def _find_state_dict(obj: Any, path: Path) -> dict[str, Any]:
    torch = _import_torch()

    def is_state(d: Any) -> bool:
        return isinstance(d, Mapping) and bool(d) and all(isinstance(v, torch.Tensor) for v in d.values())

    if is_state(obj):
        return dict(obj)
    if isinstance(obj, Mapping):
        for key in _STATE_DICT_KEYS:
            if is_state(obj.get(key)):
                return dict(obj[key])
        keys = ", ".join(map(str, list(obj)[:12]))
        raise ConversionError(
            f"{path.name}: no state_dict found; expected a mapping name → tensor, or one under "
            f"{'/'.join(_STATE_DICT_KEYS)}; the file's top-level keys are: {keys}"
        )
    raise ConversionError(
        f"{path.name}: expected a state_dict or a checkpoint dict, got {type(obj).__name__}"
    )


def _strip_prefix(state: dict[str, Any]) -> tuple[dict[str, Any], str | None]:
    """Remove a prefix that every key shares (``module.`` from DataParallel, ``_orig_mod.`` from compile)."""
    for prefix in _PREFIXES:
        if all(k.startswith(prefix) for k in state):
            return {k[len(prefix) :]: v for k, v in state.items()}, prefix
    return state, None


def _unpickle_detail(exc: BaseException) -> str:
    text = str(exc)
    m = re.search(r"Unsupported global: GLOBAL ([\w.]+)", text)
    if m:
        return f"it references {m.group(1)}"
    return _first_line(exc)


def _first_line(exc: BaseException, limit: int = 300) -> str:
    text = re.sub(r"\x1b\[[0-9;]*m", "", str(exc)).strip()
    line = next((ln.strip() for ln in text.splitlines() if ln.strip()), type(exc).__name__)
    return f"{type(exc).__name__}: {line[:limit]}"
