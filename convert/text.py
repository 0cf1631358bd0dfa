"""Building artifacts of text models: token inputs, dynamic ranges, the tokenizer record and check feeds.

Used by :func:`~infership.convert.build_artifact` when the source is a text model (``hf:PATH``). The
tokenizer file is placed in the build's scratch folder under :data:`TOKENIZER_FILE` first, so candidates
checked during the build tokenize exactly as the finished artifact will (through
:class:`infership.runtime.text.TextEncoder`), and then moved into the artifact with the model files.

Check feeds are shaped like text, not like random tensors: real token ids from the tokenizer for the example
texts, then rows of random ids with attention masks that cover a prefix (or suffix, for left padding) of each
row, at lengths from 1 to the maximum, in batches of mixed lengths — the cases a dynamic sequence axis and
padding must get right.
"""

from __future__ import annotations

import shutil
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from infership.runtime import ConversionError, InvalidInputError, Task, TensorSpec
from infership.runtime.artifact import file_entry
from infership.runtime.manifest import Tokenizer
from infership.runtime.text import TextEncoder, is_text, token_feeds

from .export import Exporter
from .hf import TextModel

#: The exporters ``auto`` tries for text models: the TorchScript-based one first, since its graph names
#: nodes by module path (``/encoder/layer.0/output/dense/MatMul``: readable repair reports and ignored
#: scopes) and keeps the attention pattern ONNX Runtime's transformer optimizer fuses.
EXPORT_ORDER = (Exporter.TORCHSCRIPT, Exporter.DYNAMO)
#: Where the tokenizer file goes, in the scratch folder and in the artifact.
TOKENIZER_FILE = "tokenizer/tokenizer.json"
#: Symbols of the token inputs' dynamic axes.
BATCH, SEQUENCE = "batch", "sequence"
_TEXTS_PER_BATCH = 16


@dataclass(frozen=True)
class TextPlan:
    """What the build uses for a text model instead of user-given shapes and names."""

    examples: tuple[Any, ...]
    input_names: list[str]
    axes: dict[str, dict[int, str]]
    task: Task
    labels: tuple[str, ...] | None


def plan(
    text: TextModel,
    encoder: TextEncoder,
    *,
    input_names: Sequence[str] | None,
    task: Task | None,
    labels: Any,
    example_inputs: Any,
    input_shapes: Any,
) -> TextPlan:
    """Example inputs (the example texts, tokenized), names, dynamic axes, task and labels of a text model.

    Raises:
        ConversionError: Inputs, shapes or names were given (a text model's inputs are its tokenizer's), or
            a task other than the model's.
    """
    import torch

    if example_inputs is not None or input_shapes is not None or input_names is not None:
        raise ConversionError(
            "a text model's inputs come from its tokenizer: do not give example inputs, input shapes or names"
        )
    if task is not None and task is not text.task:
        raise ConversionError(
            f"the model was loaded for task {text.task.value!r}; task {task.value!r} was asked for "
            "(give the task when loading: --task)"
        )
    feeds = encoder.encode(list(text.example_texts))
    names = list(text.input_names)
    examples = tuple(torch.from_numpy(feeds[n]) for n in names)
    axes = {n: {0: BATCH, 1: SEQUENCE} for n in names}
    return TextPlan(examples, names, axes, text.task, labels if labels is not None else text.labels)


def stage_tokenizer(text: TextModel, scratch: Path) -> tuple[Tokenizer, TextEncoder]:
    """Copy the tokenizer file into ``scratch`` at :data:`TOKENIZER_FILE` and make its manifest record.

    Raises:
        ArtifactError: The file is not a tokenizer the runtime can read.
    """
    dest = scratch / TOKENIZER_FILE
    dest.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(text.tokenizer_file, dest)
    record = Tokenizer(
        files=(file_entry(scratch, TOKENIZER_FILE),),
        inputs=text.fields,
        max_length=text.max_length,
        truncation=True,
        padding_side=text.padding_side,
        pad_id=text.pad_id,
        pad_token=text.pad_token,
    )
    return record, TextEncoder(record, scratch)


def dims(text: TextModel) -> dict[str, tuple[int, int | None]]:
    """The declared ranges of the token inputs' dynamic axes: batch 1.., sequence 1..max_length."""
    return {BATCH: (1, None), SEQUENCE: (1, text.max_length)}


def check_feeds(
    text: TextModel, encoder: TextEncoder, *, count: int, seed: int
) -> list[dict[str, np.ndarray]]:
    """The feeds every candidate is checked on: the example texts, then ``count`` batches of random ids
    whose lengths cover 1..max_length (a single token, the maximum, and mixed lengths in one batch).

    Args:
        text: The text model.
        encoder: Its tokenizer, as the runtime runs it.
        count: Random batches after the example texts.
        seed: Seed of the random ids.
    """
    top = text.max_length
    shapes = [[1], [top], [3, 17, 1, 9], [min(top, 64), 2], [5] * 3, [min(top, 128)], [top, 4]]
    feeds = [encoder.encode(list(text.example_texts))]
    for i in range(count):
        lengths = [min(top, max(1, n)) for n in shapes[i % len(shapes)]]
        feeds.append(
            token_feeds(
                text.fields,
                lengths,
                vocab_size=text.vocab_size,
                max_length=top,
                pad_id=text.pad_id,
                padding_side=text.padding_side,
                seed=seed + i,
            )
        )
    return feeds


def text_feeds(data: Sequence[Any], encoder: TextEncoder) -> list[dict[str, np.ndarray]]:
    """Real texts given as validation data, tokenized in batches of 16 (each padded to its longest).

    Raises:
        InvalidInputError: ``data`` holds something other than texts.
    """
    items = list(data)
    if not is_text(items):
        raise InvalidInputError(
            "validation data for a text model must be texts (strings or pairs of strings)"
        )
    order = np.argsort(encoder.lengths(items), kind="stable")  # similar lengths together: less padding
    batches = [order[i : i + _TEXTS_PER_BATCH] for i in range(0, len(order), _TEXTS_PER_BATCH)]
    return [encoder.encode([items[j] for j in idx]) for idx in batches]


def is_text_data(data: Sequence[Any] | None) -> bool:
    """Whether validation data are texts."""
    return bool(data) and is_text(list(data))  # type: ignore[arg-type]


def pooling_note(text: TextModel) -> Mapping[str, Any]:
    """What the manifest's ``extra`` records about a text model (its pooling, where it has one)."""
    return {
        "text": {
            "task": text.task.value,
            **(text.pooling or {}),
            "max_length": text.max_length,
            **({"architecture": text.architecture} if text.architecture else {}),
        }
    }


def refuse_for_text(**given: Any) -> None:
    """Refuse options that have no meaning for a text model.

    Raises:
        ConversionError: One of ``given`` is set.
    """
    bad = sorted(k for k, v in given.items() if v)
    if bad:
        raise ConversionError(f"{', '.join(bad)} do not apply to a text model")


def settle_outputs(
    path: Path,
    outputs: Sequence[TensorSpec],
    refs: Sequence[Mapping[str, np.ndarray]],
    axes: Mapping[str, Mapping[int, str]],
) -> tuple[TensorSpec, ...]:
    """Fix output dimensions an exporter left symbolic although they never vary.

    The TorchScript-based exporter names an output dimension it cannot infer through an op (the hidden
    size after mean pooling's division) instead of giving its size. Every check feed varies the batch and
    the sequence length; a dimension whose size is the same in every reference output and that is not one
    of the inputs' symbols is fixed to that size, in the manifest spec and in the ONNX file at ``path``
    (simplifiers refuse to "freeze" a dimension the graph calls dynamic).
    """
    import onnx

    symbols = {s for ax in axes.values() for s in ax.values()}
    settled, changes = [], {}
    for spec in outputs:
        shape = list(spec.shape)
        for axis, dim in enumerate(shape):
            if isinstance(dim, int) or dim in symbols or len(refs) < 2:
                continue
            sizes = {np.asarray(r[spec.name]).shape[axis] for r in refs if spec.name in r}
            if len(sizes) == 1:
                shape[axis] = int(next(iter(sizes)))
                changes[(spec.name, axis)] = shape[axis]
        settled.append(TensorSpec(spec.name, spec.dtype, tuple(shape)))
    if changes:
        model = onnx.load(str(path))
        for out in model.graph.output:
            dims = out.type.tensor_type.shape.dim
            for (name, axis), size in changes.items():
                if name == out.name and axis < len(dims):
                    dims[axis].Clear()
                    dims[axis].dim_value = size
        onnx.save(model, str(path))
    return tuple(settled)
