"""``build_artifact``: a PyTorch model → a validated artifact directory with every variant it asked for.

Steps, each recorded in the variant it produced (``Variant.steps``) with its parameters and outcome:

1. load the model (object, ``torchvision:NAME``, factory, TorchScript, ``.pt2``, state_dict + arch);
2. capture it with ``torch.export`` (kept as the ``torch-fp32`` variant; TorchScript when that fails);
3. export to ONNX (current exporter, falling back to the TorchScript-based one) and check against PyTorch;
4. simplify (onnxslim/onnxsim) and check again; an unusable result is dropped with the reason;
5. fp16 graph for GPUs (``onnx-fp16``), checked against PyTorch with fp16 tolerances and for NaN/Inf;
6. OpenVINO IR, fp32 and fp16-compressed (``openvino-fp32``, ``openvino-fp16``), checked through the
   ``openvino`` backend.

Every candidate variant is checked through the same ``Predictor`` users will load it with. The fp32 ONNX
variant is essential: if it disagrees with PyTorch beyond tolerance the build fails with the figures. Any
other variant that fails is left out, and the failure (with its figures) is recorded under
``manifest.extra["skipped"]`` and logged — or, with ``strict=True``, fails the build.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import replace
from importlib import metadata
from pathlib import Path
from typing import Any

from infership.runtime import (
    Artifact,
    ArtifactError,
    ArtifactWriter,
    ConversionError,
    Manifest,
    Preprocessing,
    Task,
)
from infership.runtime.artifact import read_onnx_specs
from infership.runtime.atomic import scratch_dir
from infership.runtime.statistics import REFERENCE_KEY, reference_statistics

from . import detection, resolve, text, variants
from .checking import Checker, Rejected, reference_outputs, summary
from .export import Exporter, capture_program, export_batch, export_onnx
from .hf import is_hf_source
from .inputs import example_tensors, random_feeds, real_feeds, source_feeds
from .preprocessing import PreprocessingRequest
from .simplify import Simplifier, simplify_onnx
from .source import load_model_source
from .validate import Tolerance, torch_outputs
from .variants import Candidate

log = logging.getLogger(__name__)

ProgressCallback = Callable[[str, int, int], None]
"""Called as ``progress(description, steps_done, steps_total)`` before each step and once at the end."""

_EXTRA_VERSIONS = (
    "torchvision",
    "onnxscript",
    "onnxslim",
    "onnxsim",
    "onnxconverter-common",
    "transformers",
    "tokenizers",
)


def build_artifact(
    model_or_source: Any,
    output_dir: str | os.PathLike[str],
    *,
    example_inputs: Any = None,
    input_shapes: Sequence[Sequence[int]] | None = None,
    input_dtypes: Sequence[str] | None = None,
    input_names: Sequence[str] | None = None,
    output_names: Sequence[str] | None = None,
    dynamic_batch: bool | None = None,
    dynamic_axes: Mapping[str, Mapping[int, str] | Sequence[int]] | None = None,
    opset: int | None = None,
    exporter: Exporter | str = Exporter.AUTO,
    arch: str | None = None,
    num_classes: int | None = None,
    allow_pickle: bool = False,
    tolerance: Tolerance | None = None,
    fp16_tolerance: Tolerance | None = None,
    samples: int = 4,
    validation_data: Sequence[Any] | str | os.PathLike[str] | None = None,
    seed: int = 0,
    simplify: bool | Simplifier | str = True,
    fp16: bool = True,
    optimize: bool = True,
    fp16_block_list: Sequence[str] | None = None,
    openvino: bool = True,
    torch_program: bool = True,
    preprocessing: Preprocessing | PreprocessingRequest | str | None = None,
    labels: Sequence[str] | str | os.PathLike[str] | None = None,
    task: Task | str | None = None,
    pooling: str | None = None,
    normalize: bool | None = None,
    max_length: int | None = None,
    name: str | None = None,
    overwrite: bool = False,
    strict: bool = False,
    progress: ProgressCallback | None = None,
) -> Artifact:
    """Convert a PyTorch model into a validated artifact directory.

    Args:
        model_or_source: An ``nn.Module``, ``ExportedProgram``, ``"torchvision:NAME"``, ``"module:callable"``,
            or a TorchScript / ``.pt2`` / state_dict file (see :func:`~infership.convert.load_model_source`).
        output_dir: The artifact directory to create.
        example_inputs: A tensor or tuple of tensors (or numpy arrays) to trace with. Or give ``input_shapes``.
        input_shapes: One shape per input, e.g. ``[(1, 3, 224, 224)]``; random example inputs are made.
        input_dtypes: One dtype name per input shape (default ``float32``).
        input_names: Graph input names (default: ``forward``'s parameter names, else ``input``/``inputN``).
        output_names: Graph output names (default: the keys of a dict output, else ``output``/``outputN``).
        dynamic_batch: Make axis 0 of every input dynamic (symbol ``batch``). Default True; for a ``.pt2``
            program, default is the program's own dynamic axes.
        dynamic_axes: More dynamic axes: input name → {axis: symbol} or a list of axes (symbol
            ``<input>_<axis>``).
        opset: ONNX opset (default: the exporter's).
        exporter: ``auto`` (current exporter, TorchScript-based one as fallback), ``dynamo`` or ``torchscript``.
        arch: Architecture for a state_dict checkpoint (``"torchvision:NAME"`` or ``"module:callable"``).
        num_classes: Passed to torchvision builders / factories.
        allow_pickle: Allow arbitrary unpickling of checkpoints (trusted files only).
        tolerance: fp32 agreement required with PyTorch (default :meth:`Tolerance.fp32`).
        fp16_tolerance: For the fp16 variants (default :meth:`Tolerance.fp16`).
        samples: Random input batches to check on (besides the example batch and ``validation_data``).
        validation_data: Real inputs to check on as well: a sequence of batches, arrays, files or images (see
            :func:`~infership.convert.inputs.real_feeds`), or one data source string in any form
            ``--calibration`` takes, of which the first batches are used
            (:func:`~infership.convert.inputs.source_feeds`).
        seed: Seed for random inputs.
        simplify: True (``auto``), False, or a :class:`Simplifier`.
        fp16: Add the ``onnx-fp16`` variant (fp16 graph for CUDA/TensorRT).
        optimize: For transformer text models: add ``onnx-fp32-fused``, the graph with ONNX Runtime's
            transformer fusions (Attention, SkipLayerNormalization...; ONNX Runtime only), checked like the
            others (:mod:`infership.convert.optimize`).
        fp16_block_list: Operator types kept in fp32 in fp16 graphs (default :data:`FP16_BLOCK_LIST`).
        openvino: Add ``openvino-fp32`` and ``openvino-fp16`` (fp16-compressed weights) IR variants.
        torch_program: Keep the PyTorch program as the ``torch-fp32`` variant (the reference backend).
        preprocessing: A :class:`Preprocessing`; a :class:`PreprocessingRequest` (preset and/or fields,
            resolved against the exported image input); or a preset name (``imagenet``, ``unit``, ``centered``).
        labels: Class names, or a file of them (see :func:`~infership.convert.preprocessing.read_labels`).
        task: What the model does (:class:`~infership.runtime.tasks.Task`: ``tensor`` or
            ``classification``), recorded as ``Manifest.task``; it decides how every check compares the
            outputs (classification adds top-1 agreement...). Default: inferred from the outputs, labels and
            preprocessing (:func:`~infership.runtime.tasks.infer_task`): ``classification`` for one
            ``[batch, classes]`` output with as many labels, or with image preprocessing; else ``tensor``.
            For ``hf:PATH``: ``embedding`` (default; ``feature-extraction`` too) or ``classification``.
        pooling: ``hf:PATH`` embeddings: ``mean`` or ``cls`` (default: the model folder's setting, else mean).
        normalize: ``hf:PATH`` embeddings: L2-normalise (default: the folder's setting, else True).
        max_length: ``hf:PATH``: longest input in tokens (default: the tokenizer's and the model's limit).
        name: Artifact name (default: the directory name).
        overwrite: Replace an existing artifact directory.
        strict: Fail when any requested variant cannot be made or fails its check, instead of leaving it
            out and recording why.
        progress: Step-level progress callback (see :data:`ProgressCallback`).

    Returns:
        The committed :class:`Artifact`.

    Raises:
        InvalidInputError: An unknown ``task``, ``classification`` for a model whose first output is not
            ``[batch, classes]`` with two or more (or a dynamic number of) classes, or ``validation_data``
            that does not fit the model's inputs.
        ConversionError: Loading, exporting or (with ``strict``) a requested variant failed.
        ValidationError: The fp32 ONNX export disagrees with PyTorch beyond ``tolerance``; ``exc.validation``
            holds the figures.
        ArtifactError: ``output_dir`` exists and ``overwrite`` is False.
    """
    out = Path(output_dir)
    if out.exists() and not out.is_dir():
        raise ArtifactError(
            f"output {out} exists and is not a folder: an artifact is a folder; give a new path"
        )
    if out.exists() and any(out.iterdir()) and not overwrite:
        raise ArtifactError(f"{out} exists and is not empty (pass overwrite=True / --force to replace it)")
    wanted_task = Task.parse(task) if task is not None else None
    tol32 = tolerance or Tolerance.fp32()
    tol16 = fp16_tolerance or Tolerance.fp16()
    simplifier = resolve.simplifier(simplify)
    planned = ["load", "export", "check"] + ["simplify"] * (simplifier is not Simplifier.NONE)
    planned += (
        ["fused"] * (optimize and isinstance(model_or_source, str) and is_hf_source(model_or_source))
        + ["torch"] * torch_program
        + ["fp16"] * fp16
        + ["openvino-fp32", "openvino-fp16"] * openvino
        + ["write"]
    )
    tick = _Ticker(progress, len(planned))

    tick("load model")
    text_options: dict[str, Any] = {"pooling": pooling, "normalize": normalize, "max_length": max_length}
    if is_hf_source(model_or_source):
        text_options["task"] = wanted_task
    src = load_model_source(
        model_or_source,
        arch=arch,
        num_classes=num_classes,
        allow_pickle=allow_pickle,
        text_options=text_options,
    )

    with scratch_dir("build") as tmp_name:
        tmp = Path(tmp_name)
        tokenizer, encoder, detector = None, None, None
        if src.text is not None:
            text.refuse_for_text(
                preprocessing=preprocessing, dynamic_axes=dynamic_axes, input_dtypes=input_dtypes
            )
            tokenizer, encoder = text.stage_tokenizer(src.text, tmp)
            tplan = text.plan(
                src.text,
                encoder,
                input_names=input_names,
                task=wanted_task,
                labels=labels,
                example_inputs=example_inputs,
                input_shapes=input_shapes,
            )
            examples, in_names, wanted_task, labels = (
                tplan.examples,
                tplan.input_names,
                tplan.task,
                tplan.labels,
            )
            axes = {
                n: {a: s for a, s in ax.items() if a or dynamic_batch is not False}
                for n, ax in tplan.axes.items()
            }
        else:
            examples = example_tensors(example_inputs, input_shapes, input_dtypes, seed=seed)
            detector = detection.adapt(src, examples)
            # A detector's list[dict] outputs become flat named outputs, its batch fixed (convert/detection.py).
            if detector is not None:
                src, dynamic_batch = detector, detection.fixed_batch(dynamic_batch)
                wanted_task = wanted_task or Task.DETECTION
                # Simplifiers fold the detector's box shapes wrongly (it passes random inputs, fails photos).
                simplifier = Simplifier.NONE
                output_names = output_names or list(detection.OUTPUTS)
            in_names = resolve.input_names(input_names, src, len(examples))
            axes = resolve.resolve_axes(src, in_names, examples, dynamic_batch, dynamic_axes)
        if output_names is None and src.text is not None:
            output_names = [src.text.output_name]
        # The task is checked on the torch outputs here, before the export work.
        out_names = resolve.output_names(output_names, src, examples, task=wanted_task)
        traced = export_batch(examples, axes, in_names)
        tick("export to ONNX")
        program, capture_step = src.program, None
        want_program = torch_program or Exporter.parse(exporter) is not Exporter.TORCHSCRIPT
        want_program = want_program and detector is None  # torch.export cannot capture NMS: TorchScript kept
        if src.program is None and src.kind != "torchscript" and want_program:
            program, capture_step = capture_program(
                src.model, traced, input_names=in_names, dynamic_axes=axes
            )
        onnx_steps = [src.step, *([capture_step] if capture_step else [])]
        raw = tmp / "export.onnx"
        export_step = export_onnx(
            src.model,
            traced,
            raw,
            input_names=in_names,
            output_names=out_names,
            dynamic_axes=axes,
            opset=opset,
            exporter=exporter,
            program=program,
            auto_order=text.EXPORT_ORDER
            if src.text is not None
            else detection.EXPORT_ORDER
            if detector is not None
            else (Exporter.DYNAMO, Exporter.TORCHSCRIPT),
        )
        if detector is not None:
            detection.declare_outputs(raw, out_names)
        inputs, outputs = read_onnx_specs(raw)
        pre = resolve.resolve_preprocessing(preprocessing, inputs)
        # A detector's labels name the values of its labels output, not a class axis to count them against.
        label_names = resolve.resolve_labels(labels, outputs if detector is None else outputs[1:2])
        # The task is settled (given, or inferred from the outputs, labels and preprocessing) before any
        # check: checks judge by it.
        base = Manifest(
            name=name or out.name,
            inputs=inputs,
            outputs=outputs,
            labels=label_names,
            preprocessing=pre,
            task=wanted_task,
            tokenizer=tokenizer,
            dims=text.dims(src.text) if src.text is not None else {},
        )
        if src.text is not None and encoder is not None:
            feeds = text.check_feeds(src.text, encoder, count=samples, seed=seed)
        else:
            feeds = random_feeds(examples, in_names, axes, count=samples, seed=seed)
        if isinstance(validation_data, (str, os.PathLike)):  # a data source, as --calibration takes
            real = source_feeds(
                os.fspath(validation_data), inputs, pre, class_names=label_names, tokenizer=encoder
            )
        elif encoder is not None and text.is_text_data(validation_data):
            real = text.text_feeds(validation_data, encoder)  # type: ignore[arg-type]
        else:
            real = real_feeds(validation_data, inputs, pre)
        feeds, refs, notes = reference_outputs(src, feeds, out_names)
        refs += torch_outputs(src.model, real, out_names)
        if src.text is not None:
            base = replace(base, outputs=text.settle_outputs(raw, base.outputs, refs, axes))
        if base.task is Task.DETECTION and not real:
            # Random inputs rarely hold objects for a trained detector: with nothing to compare, the checks
            # say so (a note in the manifest, a warning) instead of refusing the export; mismatching
            # detections still fail. Real images (validation_data) make the comparison count.
            notes.append(
                "detections checked on random inputs only: where the reference finds nothing there is nothing "
                "to compare; give real images (validation_data / --validation-data) to compare detections"
            )
            log.warning(notes[-1])
            tol32 = tolerance or replace(tol32, min_matched=0.0)
            tol16 = fp16_tolerance or replace(tol16, min_matched=0.0)
        check = Checker(tmp, base, feeds + real, refs, n_real=len(real), notes=notes)

        tick("check ONNX against PyTorch")
        checked = check.run("onnx-fp32", "onnx", "fp32", [raw.name], "ort-cpu", tol32)
        if (
            not checked.passed
            and export_step.result["exporter"] == "dynamo"
            and Exporter.parse(exporter) is Exporter.AUTO
            and src.text is None
        ):
            export_step, checked = variants.retry_torchscript(
                src, traced, raw, in_names, out_names, axes, opset, check, tol32, checked
            )
        if not checked.passed:
            raise checked.rejected("the exported ONNX model")
        onnx_steps += [export_step, checked.step]
        final = raw

        if simplifier is not Simplifier.NONE:
            tick("simplify")
            simplified = tmp / "simplified.onnx"
            written, sstep = simplify_onnx(raw, simplified, simplifier=simplifier)
            if written:
                schecked = check.run("onnx-fp32", "onnx", "fp32", [simplified.name], "ort-cpu", tol32)
                if schecked.passed:
                    final, checked = simplified, schecked
                else:
                    why = "simplified graph changed results: " + "; ".join(schecked.failures)
                    log.warning("keeping the unsimplified graph: %s", why)
                    sstep = replace(
                        sstep,
                        result={
                            **sstep.result,
                            "applied": False,
                            "reason": why,
                            "rejected_validation": summary(schecked.validation),
                        },
                    )
            onnx_steps += [sstep] + ([checked.step] if final is simplified else [])

        candidates = [
            Candidate("onnx-fp32", "onnx", "fp32", [final.name], onnx_steps, checked.validation, "ort-cpu")
        ]
        skipped: list[dict[str, Any]] = []

        def attempt(vid: str, desc: str, make: Callable[[], Candidate]) -> None:
            tick(desc)
            try:
                candidates.append(make())
            except ConversionError as exc:  # a Rejected check is one too
                entry: dict[str, Any] = {"variant": vid, "reason": str(exc)}
                if isinstance(exc, Rejected):
                    entry["validation"] = exc.validation
                if strict:
                    raise ConversionError(f"{vid}: {exc}") from exc
                log.warning("variant %s left out: %s", vid, exc)
                skipped.append(entry)

        if src.text is not None and optimize:
            arch = src.text.architecture
            attempt(
                variants.FUSED_ID,
                "transformer fusions",
                # From the exporter's graph: simplifiers rewrite the attention pattern the fusions match.
                lambda: variants.fused_variant(raw, tmp, arch, check, tol32),
            )
        if torch_program:
            attempt(
                "torch-fp32",
                "keep the PyTorch program",
                lambda: variants.torch_variant(src, program, traced, capture_step, tmp, check, tol32),
            )
        if fp16:
            attempt(
                "onnx-fp16",
                "fp16 graph",
                lambda: variants.fp16_variant(final, tmp, fp16_block_list, check, tol16),
            )
        if openvino:
            for compress in (False, True):
                vid = "openvino-fp16" if compress else "openvino-fp32"
                attempt(
                    vid,
                    f"OpenVINO IR ({vid})",
                    lambda c=compress, v=vid: variants.openvino_variant(
                        final, tmp, v, c, check, tol32, fp16_tolerance
                    ),
                )

        tick("write artifact")
        extra: dict[str, Any] = {"source": src.description, "source_kind": src.kind}
        if skipped:
            extra["skipped"] = skipped
        if notes:
            extra["notes"] = notes
        if src.text is not None:
            extra.update(text.pooling_note(src.text))
        if real:  # real inputs and PyTorch's outputs on them: what serving compares live traffic with
            extra[REFERENCE_KEY] = reference_statistics(
                real, refs[-len(real) :], task=base.task, source="export validation data"
            )
        manifest = replace(base, versions=_versions(), extra=extra)
        with ArtifactWriter.create(out, manifest, overwrite=overwrite) as writer:
            if tokenizer is not None:
                writer.add_file(tmp / text.TOKENIZER_FILE, text.TOKENIZER_FILE, move=False)
            for cand in candidates:
                files = [writer.add_file(tmp / rel, _artifact_name(cand, rel)) for rel in cand.files]
                writer.put_variant(
                    cand.id,
                    format=cand.format,
                    precision=cand.precision,
                    files=files,
                    steps=cand.steps,
                    validation=cand.validation,
                    target=cand.target,
                )
            artifact = writer.commit()
    tick.done()
    log.info("wrote %s with variants %s", out, [c.id for c in candidates])
    return artifact


def _artifact_name(cand: Candidate, rel: str) -> str:
    if cand.format == "openvino":
        return rel
    return {
        "onnx-fp32": "model.onnx",
        "onnx-fp16": "model-fp16.onnx",
        variants.FUSED_ID: "model-fused.onnx",
    }.get(cand.id, rel)


def _versions() -> dict[str, str]:
    from infership.runtime.hardware import library_versions

    versions = library_versions()
    for pkg in _EXTRA_VERSIONS:
        try:
            versions[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            continue
    return versions


class _Ticker:
    def __init__(self, callback: ProgressCallback | None, total: int) -> None:
        self.callback, self.total, self.done_steps = callback, total, 0

    def __call__(self, description: str) -> None:
        log.info("%s", description)
        if self.callback is not None:
            self.callback(description, self.done_steps, self.total)
        self.done_steps += 1

    def done(self) -> None:
        if self.callback is not None:
            self.callback("done", self.total, self.total)
