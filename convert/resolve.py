"""Resolving build_artifact's arguments against the loaded model: names, dynamic axes, preprocessing, labels."""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from typing import Any

from infership.runtime import ConversionError, InvalidInputError, Preprocessing, Task, TensorSpec
from infership.runtime.segmentation import AUX_OUTPUTS

from .preprocessing import PreprocessingRequest, check_labels, check_preprocessing, read_labels
from .simplify import Simplifier
from .source import ModelSource
from .validate import name_outputs


def simplifier(value: bool | Simplifier | str) -> Simplifier:
    if value is True:
        return Simplifier.AUTO
    if value is False:
        return Simplifier.NONE
    return Simplifier.parse(value)


def input_names(given: Sequence[str] | None, src: ModelSource, n: int) -> list[str]:
    if given is not None:
        if len(given) != n:
            raise ConversionError(f"{len(given)} input names given for {n} example inputs")
        return list(given)
    if len(src.input_names) == n:
        return list(src.input_names)
    return ["input"] if n == 1 else [f"input{i}" for i in range(n)]


def output_names(
    given: Sequence[str] | None, src: ModelSource, examples: tuple, *, task: Task | None = None
) -> list[str]:
    """The graph's output names, from the model's outputs on the example inputs; ``task`` is checked
    against those outputs (:func:`check_task`) here, before any export work.

    Raises:
        ConversionError: The model fails on the examples or returns something other than tensors.
        InvalidInputError: ``task`` cannot be served by the model's outputs.
    """
    import torch

    try:
        with torch.inference_mode():
            result = src.model(*examples)
    except Exception as exc:  # arbitrary model code: translated below
        shapes = [list(x.shape) for x in examples]
        raise ConversionError(
            f"the model fails on the example inputs {shapes}: {type(exc).__name__}: {exc}"
        ) from exc
    if isinstance(result, Mapping):
        default = [str(k) for k in result]
    elif isinstance(result, (tuple, list)):
        default = ["output"] if len(result) == 1 else [f"output{i}" for i in range(len(result))]
    else:
        default = ["output"]
    names = list(given) if given is not None else default
    try:
        named = name_outputs(result, names)
    except ConversionError as exc:
        raise ConversionError(
            f"model outputs: {exc} (a tensor, a tuple/list of tensors or a dict of tensors is expected)"
        ) from exc
    check_task(task, torch_output_specs(named))
    return names


def resolve_axes(
    src: ModelSource,
    names: Sequence[str],
    examples: tuple,
    dynamic_batch: bool | None,
    dynamic_axes: Mapping[str, Mapping[int, str] | Sequence[int]] | None,
) -> dict[str, dict[int, str]]:
    if src.program is not None and dynamic_batch is None and dynamic_axes is None:
        return program_axes(src.program, names)
    axes: dict[str, dict[int, str]] = {n: {} for n in names}
    if dynamic_batch is None or dynamic_batch:
        for n, x in zip(names, examples, strict=True):
            if x.ndim > 0:
                axes[n][0] = "batch"
    for n, spec in (dynamic_axes or {}).items():
        if n not in axes:
            raise ConversionError(f"dynamic_axes names input {n!r}; the inputs are {list(names)}")
        items = spec.items() if isinstance(spec, Mapping) else ((a, f"{n}_{a}") for a in spec)
        for a, sym in items:
            axes[n][int(a)] = str(sym)
    return axes


def program_axes(program: Any, names: Sequence[str]) -> dict[str, dict[int, str]]:
    """The dynamic axes an ExportedProgram was captured with (axis 0 → ``batch``)."""
    import torch

    user = [
        n
        for n in program.graph.nodes
        if n.op == "placeholder" and n.name in set(program.graph_signature.user_inputs)
    ]
    axes: dict[str, dict[int, str]] = {n: {} for n in names}
    for name, node in zip(names, user, strict=False):
        val = node.meta.get("val")
        for axis, d in enumerate(getattr(val, "shape", ())):
            if isinstance(d, torch.SymInt):
                axes[name][axis] = "batch" if axis == 0 else f"{name}_{axis}"
    return axes


def resolve_preprocessing(
    pre: Preprocessing | PreprocessingRequest | str | None, inputs: Sequence[Any]
) -> Preprocessing | None:
    if pre is None:
        return None
    if isinstance(pre, str):
        pre = PreprocessingRequest(preset=pre)
    if isinstance(pre, PreprocessingRequest):
        return pre.resolve(inputs)
    spec = next((s for s in inputs if s.name == pre.input), None)
    if spec is None:
        raise ConversionError(
            f"preprocessing names input {pre.input!r}; the model's inputs are {[s.name for s in inputs]}"
        )
    check_preprocessing(pre, spec)
    return pre


def resolve_labels(
    labels: Sequence[str] | str | os.PathLike[str] | None, outputs: Sequence[Any]
) -> tuple[str, ...] | None:
    if labels is None:
        return None
    names = read_labels(labels) if isinstance(labels, (str, os.PathLike)) else tuple(str(x) for x in labels)
    check_labels(names, outputs)
    return names


def check_task(task: Task | None, outputs: Sequence[TensorSpec]) -> None:
    """Refuse a task the model's outputs cannot serve (``None``: inferred later, always fits).

    Raises:
        InvalidInputError: ``classification`` for a model whose first output is not ``[batch, classes]``
            with a fixed number of classes of at least two, or a dynamic one (a single score has no top
            class to agree on); ``segmentation`` for one without class scores ``[batch, classes, H, W]``
            (two classes or more, or a dynamic count) in its main output, the one the judge reads: ``out``
            when there is one, else the first that is not auxiliary.
    """
    if task is Task.SEGMENTATION:
        _check_segmentation(outputs)
    if task is not Task.CLASSIFICATION:
        return
    first = outputs[0] if outputs else None
    classes = first.shape[1] if first is not None and first.rank == 2 else None
    if first is None or first.rank != 2 or (isinstance(classes, int) and classes < 2):
        got = first.shape_str() if first is not None else "no output"
        raise InvalidInputError(
            "task 'classification' needs class scores [batch, classes] with two or more classes in the first "
            f"output; it is {got}"
        )


def _check_segmentation(outputs: Sequence[TensorSpec]) -> None:
    by_name = {s.name: s for s in outputs}
    main = by_name.get("out") or next((s for s in outputs if s.name not in AUX_OUTPUTS), None)
    classes = main.shape[1] if main is not None and main.rank == 4 else None
    if main is not None and main.rank == 4 and not (isinstance(classes, int) and classes < 2):
        return
    got = f"{main.name!r} is {main.shape_str()}" if main is not None else "the model has no output"
    raise InvalidInputError(
        "task 'segmentation' needs class scores [batch, classes, H, W] with two or more classes in the first "
        f"output (or one named 'out'); {got}. A binary segmenter with one logit channel x can return "
        "torch.cat([-x, x], dim=1) instead: two-class logits whose per-pixel top class is x > 0"
    )


def torch_output_specs(result: Mapping[str, Any]) -> list[TensorSpec]:
    """Specs of the torch model's named outputs on the example inputs (axis 0 as ``batch``), so a task can be
    checked before any export work."""
    specs = []
    for name, value in result.items():
        shape = tuple(int(d) for d in value.shape)
        specs.append(TensorSpec(name, value.dtype.name, ("batch", *shape[1:]) if shape else ()))
    return specs
