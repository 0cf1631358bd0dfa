"""PyTorch → ONNX export, and the PyTorch program kept in the artifact as the reference.

The current exporter (``torch.onnx.export(dynamo=True)``, built on ``torch.export``) is tried first; when it
fails, the TorchScript-based one (``dynamo=False``) is tried, and the step records which one ran and why.
Dynamic axes are given once, as ``{input name: {axis: symbol}}``, and become ``torch.export.Dim`` objects
for the current exporter and ``dynamic_axes`` for the older one. Whatever the exporter names them, the
symbolic dimensions of the written graph are renamed to the caller's symbols (``batch``...).
"""

from __future__ import annotations

import enum
import logging
import os
import re
import shutil
import time
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from infership.runtime import ConversionError, InvalidInputError, Step

from .onnx_names import placeholders, rename_outputs

log = logging.getLogger(__name__)

DynamicAxes = Mapping[str, Mapping[int, str]]
"""Input name → {axis: symbol}, e.g. ``{"x": {0: "batch", 2: "height"}}``."""

# ONNX protobufs cannot exceed 2 GiB; larger models would need external data files.
_MAX_INLINE_BYTES = 2_000_000_000
_MAX_DIM = 1 << 20


class Exporter(str, enum.Enum):
    """Which ``torch.onnx`` exporter to use."""

    AUTO = "auto"
    """The current one (``dynamo=True``), falling back to the TorchScript one when it fails (recorded)."""
    DYNAMO = "dynamo"
    """``torch.onnx.export(dynamo=True)`` only."""
    TORCHSCRIPT = "torchscript"
    """``torch.onnx.export(dynamo=False)`` only."""

    @classmethod
    def parse(cls, value: str | Exporter) -> Exporter:
        """``"dynamo"`` → :attr:`DYNAMO`.

        Raises:
            InvalidInputError: An unknown name (the message lists the known ones).
        """
        try:
            return cls(value)
        except ValueError as exc:
            known = ", ".join(m.value for m in cls)
            raise InvalidInputError(f"unknown exporter {value!r}; expected one of: {known}") from exc


def export_batch(
    example_inputs: Sequence[Any], dynamic_axes: DynamicAxes, input_names: Sequence[str]
) -> tuple[Any, ...]:
    """The example inputs to trace with: a batch of 1 on a dynamic batch axis becomes 2.

    ``torch.export`` specializes sizes 0 and 1, so a dynamic axis traced at size 1 would be fixed to 1.
    """
    out = []
    for name, x in zip(input_names, example_inputs, strict=True):
        axes = dynamic_axes.get(name, {})
        if 0 in axes and getattr(x, "ndim", 0) > 0 and x.shape[0] == 1:
            x = x.repeat(2, *([1] * (x.ndim - 1)))
        out.append(x)
    return tuple(out)


def capture_program(
    model: Any, example_inputs: Sequence[Any], *, input_names: Sequence[str], dynamic_axes: DynamicAxes
) -> tuple[Any, Step]:
    """``torch.export.export`` the model with the requested dynamic axes.

    Args:
        model: The ``nn.Module`` to capture.
        example_inputs: One tensor per input (batch ≥ 2 on dynamic batch axes, see :func:`export_batch`).
        input_names: One name per input, the keys of ``dynamic_axes``.
        dynamic_axes: Input name → {axis: symbol}.

    Returns:
        ``(program, step)``; ``program`` is None when ``torch.export`` failed, and the step says why.
    """
    import torch

    t0 = time.perf_counter()
    shapes = _dynamic_shapes(input_names, example_inputs, dynamic_axes)
    params = {"strict": False, "dynamic_axes": _axes_to_json(dynamic_axes)}
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            program = torch.export.export(model, tuple(example_inputs), dynamic_shapes=shapes, strict=False)
    except Exception as exc:  # noqa: BLE001 - torch.export raises UserError, TorchRuntimeError, AssertionError...
        reason = summarize_torch_error(exc)
        log.info("torch.export failed: %s", reason)
        return None, Step(
            "torch.export", params, {"ok": False, "error": reason}, round(time.perf_counter() - t0, 3)
        )
    return program, Step("torch.export", params, {"ok": True}, round(time.perf_counter() - t0, 3))


def export_onnx(
    model: Any,
    example_inputs: Sequence[Any],
    path: str | os.PathLike[str],
    *,
    input_names: Sequence[str],
    output_names: Sequence[str],
    dynamic_axes: DynamicAxes,
    opset: int | None = None,
    exporter: Exporter = Exporter.AUTO,
    program: Any = None,
    auto_order: Sequence[Exporter] = (Exporter.DYNAMO, Exporter.TORCHSCRIPT),
) -> Step:
    """Export ``model`` to an ONNX file.

    Args:
        model: The ``nn.Module`` (or ``ScriptModule``) to export.
        example_inputs: One tensor per input (batch ≥ 2 on dynamic batch axes, see :func:`export_batch`).
        path: Where to write the ``.onnx`` file.
        input_names: Graph input names, one per example input.
        output_names: Graph output names, one per model output. The graph is exported under placeholder
            names and renamed afterwards, so a requested name that some value inside the graph already
            has never yields a second definition of it (see :mod:`infership.convert.onnx_names`).
        dynamic_axes: Input name → {axis: symbol}. Outputs get symbolic axes from shape inference; with the
            TorchScript exporter, axis 0 of every output is made dynamic when the batch is.
        opset: ONNX opset; ``None`` uses the exporter's default.
        exporter: Which exporter; ``AUTO`` falls back to the TorchScript one when the current one fails.
        program: An ``ExportedProgram`` already captured from ``model`` with the same dynamic axes; the
            current exporter then converts it instead of capturing again.
        auto_order: The exporters ``AUTO`` tries, in order (text models try the TorchScript-based one
            first: its graphs name nodes by module path and carry the attention pattern ONNX Runtime's
            transformer optimizer fuses).

    Returns:
        The ``export`` step: exporter used, fallback reason, opset, node count.

    Raises:
        ConversionError: No exporter could export the model; the message has a one-line reason per exporter.
    """
    import torch

    exporter = Exporter.parse(exporter)
    path = Path(path)
    _check_size(model)
    params: dict[str, Any] = {
        "exporter": exporter.value,
        "opset": opset,
        "input_names": list(input_names),
        "output_names": list(output_names),
        "dynamic_axes": _axes_to_json(dynamic_axes),
        "example_shapes": [list(x.shape) for x in example_inputs],
    }
    attempts = list(auto_order) if exporter is Exporter.AUTO else [exporter]
    if exporter is Exporter.AUTO:
        params["auto_order"] = [e.value for e in attempts]
    exported_names = placeholders(len(output_names))
    failures: list[str] = []
    t0 = time.perf_counter()
    for which in attempts:
        try:
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                if which is Exporter.DYNAMO:
                    _export_dynamo(
                        torch,
                        model,
                        example_inputs,
                        path,
                        input_names,
                        exported_names,
                        dynamic_axes,
                        opset,
                        program,
                    )
                else:
                    _export_torchscript(
                        torch, model, example_inputs, path, input_names, exported_names, dynamic_axes, opset
                    )
        except Exception as exc:  # noqa: BLE001 - both exporters raise arbitrary torch/onnxscript error types
            reason = summarize_torch_error(exc)
            log.info("ONNX export with the %s exporter failed: %s", which.value, reason)
            failures.append(f"{which.value} exporter: {reason}")
            path.unlink(missing_ok=True)
            continue
        for w in caught:
            log.debug("exporter warning: %s", w.message)
        facts = finish_onnx(path, input_names, dynamic_axes, output_names=output_names)
        result: dict[str, Any] = {"exporter": which.value, **facts}
        if failures:
            result["fallback_reason"] = "; ".join(failures)
            log.warning(
                "ONNX export fell back to the %s exporter: %s", which.value, result["fallback_reason"]
            )
        return Step("export", params, result, round(time.perf_counter() - t0, 3))
    raise ConversionError("could not export the model to ONNX: " + "; ".join(failures))


def _export_dynamo(
    torch: Any,
    model: Any,
    example_inputs: Sequence[Any],
    path: Path,
    input_names: Sequence[str],
    output_names: Sequence[str],
    dynamic_axes: DynamicAxes,
    opset: int | None,
    program: Any,
) -> None:
    if program is not None:
        target, shapes = program, None
    else:
        target, shapes = model, _dynamic_shapes(input_names, example_inputs, dynamic_axes)
    torch.onnx.export(
        target,
        tuple(example_inputs),
        os.fspath(path),
        dynamo=True,
        input_names=list(input_names),
        output_names=list(output_names),
        opset_version=opset,
        dynamic_shapes=shapes,
        external_data=False,
        verbose=False,
    )


def _export_torchscript(
    torch: Any,
    model: Any,
    example_inputs: Sequence[Any],
    path: Path,
    input_names: Sequence[str],
    output_names: Sequence[str],
    dynamic_axes: DynamicAxes,
    opset: int | None,
) -> None:
    axes: dict[str, dict[int, str]] = {n: dict(a) for n, a in dynamic_axes.items() if a}
    batch = {a.get(0) for a in dynamic_axes.values()} - {None}
    if len(batch) == 1:
        (symbol,) = batch
        for name in output_names:
            axes.setdefault(name, {})[0] = symbol
    torch.onnx.export(
        model,
        tuple(example_inputs),
        os.fspath(path),
        dynamo=False,
        input_names=list(input_names),
        output_names=list(output_names),
        opset_version=opset or 17,
        dynamic_axes=axes or None,
    )


def finish_onnx(
    path: Path,
    input_names: Sequence[str],
    dynamic_axes: DynamicAxes,
    *,
    output_names: Sequence[str] | None = None,
) -> dict[str, Any]:
    """Name the outputs, rename the graph's symbolic dims to the caller's symbols, and check that the
    dynamic axes stayed dynamic.

    Args:
        path: The exported model, rewritten in place.
        input_names: The graph's input names.
        dynamic_axes: Input name → {axis: symbol}.
        output_names: The outputs' final names (the graph has placeholder names until now); internal
            values already holding one of them are renamed first.

    Returns:
        ``opset``, ``ir_version`` and ``nodes`` of the written model, and ``renamed_internal`` when
        internal values had to make room for the output names.

    Raises:
        ConversionError: The exporter made a requested dynamic axis static, or dropped an input.
    """
    import onnx

    model = onnx.load(os.fspath(path))
    moved = rename_outputs(model, output_names) if output_names is not None else {}
    graph_inputs = {vi.name: vi for vi in model.graph.input}
    mapping: dict[str, str] = {}
    for name in input_names:
        if name not in graph_inputs:
            if name in {i.name for i in model.graph.initializer}:
                continue
            raise ConversionError(
                f"the exported graph has no input {name!r}; its inputs are {list(graph_inputs)} (an input the model "
                "ignores is dropped by the exporter)"
            )
        dims = graph_inputs[name].type.tensor_type.shape.dim
        for axis, symbol in dynamic_axes.get(name, {}).items():
            if axis >= len(dims):
                raise ConversionError(
                    f"dynamic axis {axis} of input {name!r}: the input has rank {len(dims)}"
                )
            d = dims[axis]
            if d.HasField("dim_value"):
                raise ConversionError(
                    f"axis {axis} of input {name!r} was requested dynamic ({symbol!r}) but the exporter fixed it to "
                    f"{d.dim_value}; the model's code probably depends on that size"
                )
            if d.dim_param and d.dim_param != symbol:
                mapping[d.dim_param] = symbol
            elif not d.dim_param:
                d.dim_param = symbol
    if mapping:
        for vi in [*model.graph.input, *model.graph.output, *model.graph.value_info]:
            for d in vi.type.tensor_type.shape.dim:
                if d.dim_param:
                    d.dim_param = _rename_expr(d.dim_param, mapping)
    if mapping or output_names is not None:
        onnx.save(model, os.fspath(path))
    opset = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), None)
    facts: dict[str, Any] = {"opset": opset, "ir_version": model.ir_version, "nodes": len(model.graph.node)}
    if moved:
        facts["renamed_internal"] = moved
    return facts


def _rename_expr(expr: str, mapping: Mapping[str, str]) -> str:
    if expr in mapping:
        return mapping[expr]
    # Derived sizes such as "s77//2 + 1": rename the symbols inside, as whole words.
    return re.sub(r"\b[A-Za-z_]\w*\b", lambda m: mapping.get(m.group(0), m.group(0)), expr)


def save_torch_program(
    source_kind: str,
    model: Any,
    program: Any,
    example_inputs: Sequence[Any],
    path_stem: Path,
    *,
    source_file: Path | None = None,
    capture_error: str | None = None,
) -> tuple[Path, str, Step]:
    """Write the PyTorch reference program: a ``torch.export`` ``.pt2``, else TorchScript.

    Args:
        source_kind: The :class:`~infership.convert.source.ModelSource` kind.
        model: The module (used for TorchScript tracing when there is no program).
        program: The captured ``ExportedProgram``, or None when ``torch.export`` failed.
        example_inputs: Inputs for ``torch.jit.trace``.
        path_stem: Directory and stem; ``.pt2`` or ``.ts`` is appended.
        source_file: The original TorchScript file, copied as is when the source was one.
        capture_error: Why ``torch.export`` failed, recorded when falling back to TorchScript.

    Returns:
        ``(path, format, step)`` with format ``torch-export`` or ``torchscript``.

    Raises:
        ConversionError: Neither form could be written.
    """
    import torch

    t0 = time.perf_counter()
    if program is not None:
        path = path_stem.with_suffix(".pt2")
        try:
            torch.export.save(program, os.fspath(path))
        except Exception as exc:  # torch.export.save raises arbitrary torch error types: translated below
            raise ConversionError(
                f"saving the torch.export program failed: {summarize_torch_error(exc)}"
            ) from exc
        return (
            path,
            "torch-export",
            Step("save-torch", {"format": "torch-export"}, {}, round(time.perf_counter() - t0, 3)),
        )
    path = path_stem.with_suffix(".ts")
    result: dict[str, Any] = {}
    if capture_error:
        result["fallback_reason"] = f"torch.export failed: {capture_error}"
    if source_kind == "torchscript" and source_file is not None:
        shutil.copy2(source_file, path)
        method = "copied"
    elif source_kind == "torchscript":
        model.save(os.fspath(path))
        method = "saved"
    else:
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                traced = torch.jit.trace(model, tuple(example_inputs), check_trace=False)
            traced.save(os.fspath(path))
        except Exception as exc:  # tracing runs arbitrary model code: translated below
            raise ConversionError(
                f"could not keep a PyTorch program: torch.export failed ({capture_error}) and so did "
                f"torch.jit.trace ({summarize_torch_error(exc)})"
            ) from exc
        method = "traced"
    if capture_error:
        log.warning("kept the PyTorch program as TorchScript: %s", result["fallback_reason"])
    params = {"format": "torchscript", "method": method}
    return path, "torchscript", Step("save-torch", params, result, round(time.perf_counter() - t0, 3))


def summarize_torch_error(exc: BaseException, limit: int = 400) -> str:
    """One line saying what went wrong, from torch's multi-paragraph exporter errors."""
    text = re.sub(r"\x1b\[[0-9;]*m", "", str(exc))
    # The current exporter ends with "## Exception summary" and lines "<class 'X'>: message" (innermost first).
    m = re.search(r"## Exception summary\s*\n(.*?)(?:\n\s*\n|$)", text, flags=re.S)
    if m:
        first = m.group(1).strip().splitlines()[0]
        first = re.sub(r"^<class '(?:[\w.]+\.)?(\w+)'>:\s*", r"\1: ", first)
        return first[:limit]
    line = next((ln.strip() for ln in text.splitlines() if ln.strip()), "")
    return f"{type(exc).__name__}: {line}"[:limit]


def _dynamic_shapes(
    input_names: Sequence[str], example_inputs: Sequence[Any], dynamic_axes: DynamicAxes
) -> tuple[dict[int, Any] | None, ...] | None:
    """``torch.export`` dynamic_shapes: one named Dim per symbol, shared across inputs."""
    import torch

    if not any(dynamic_axes.values()):
        return None
    dims: dict[str, Any] = {}
    out: list[dict[int, Any] | None] = []
    for name, x in zip(input_names, example_inputs, strict=True):
        axes = dynamic_axes.get(name, {})
        if not axes:
            out.append(None)
            continue
        spec = {}
        for axis, symbol in axes.items():
            if axis >= x.ndim:
                raise ConversionError(
                    f"dynamic axis {axis} of input {name!r}: the example input has shape {list(x.shape)}"
                )
            if symbol not in dims:
                # Batch-like axis 0 accepts 1 at run time; other axes get the range torch infers (a conv needs
                # at least its kernel size), so they are marked DYNAMIC rather than bounded here.
                dims[symbol] = (
                    torch.export.Dim(_identifier(symbol), min=1, max=_MAX_DIM)
                    if axis == 0
                    else torch.export.Dim.DYNAMIC
                )
            spec[axis] = dims[symbol]
        out.append(spec)
    return tuple(out)


def _identifier(symbol: str) -> str:
    ident = re.sub(r"\W", "_", symbol)
    return ident if ident and not ident[0].isdigit() else f"d_{ident}"


def _axes_to_json(dynamic_axes: DynamicAxes) -> dict[str, dict[str, str]]:
    return {n: {str(k): v for k, v in a.items()} for n, a in dynamic_axes.items() if a}


def _check_size(model: Any) -> None:
    try:
        tensors = [*model.parameters(), *model.buffers()]
    except AttributeError:
        return
    total = sum(t.numel() * t.element_size() for t in tensors)
    if total > _MAX_INLINE_BYTES:
        raise ConversionError(
            f"the model has {total / 1e9:.1f} GB of weights; ONNX files over 2 GB need external data files, "
            "which infership does not write yet"
        )
