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
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from importlib import metadata
from pathlib import Path
from typing import Any

from infership.runtime import (
    Artifact,
    ArtifactWriter,
    ConversionError,
    InfershipError,
    Manifest,
    Predictor,
    Preprocessing,
    Step,
    ValidationError,
    Variant,
)
from infership.runtime.artifact import file_entry, read_onnx_specs

from .export import Exporter, capture_program, export_batch, export_onnx, save_torch_program
from .fp16 import convert_fp16
from .inputs import example_tensors, random_feeds, real_feeds
from .openvino_ir import convert_openvino
from .preprocessing import check_labels, check_preprocessing, make_preprocessing, read_labels
from .simplify import Simplifier, simplify_onnx
from .source import ModelSource, load_model_source
from .validate import Tolerance, compare_outputs, name_outputs, torch_outputs

log = logging.getLogger(__name__)

ProgressCallback = Callable[[str, int, int], None]
"""Called as ``progress(description, steps_done, steps_total)`` before each step and once at the end."""

_EXTRA_VERSIONS = ("torchvision", "onnxscript", "onnxslim", "onnxsim", "onnxconverter-common")


@dataclass
class _Candidate:
    id: str
    format: str
    precision: str
    files: list[str]
    steps: list[Step] = field(default_factory=list)
    validation: dict[str, Any] | None = None
    target: str | None = None


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
    validation_data: Sequence[Any] | None = None,
    seed: int = 0,
    simplify: bool | Simplifier | str = True,
    fp16: bool = True,
    fp16_block_list: Sequence[str] | None = None,
    openvino: bool = True,
    torch_program: bool = True,
    preprocessing: Preprocessing | str | None = None,
    labels: Sequence[str] | str | os.PathLike[str] | None = None,
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
        validation_data: Real inputs to check on as well (see :func:`~infership.convert.inputs.real_feeds`).
        seed: Seed for random inputs.
        simplify: True (``auto``), False, or a :class:`Simplifier`.
        fp16: Add the ``onnx-fp16`` variant (fp16 graph for CUDA/TensorRT).
        fp16_block_list: Operator types kept in fp32 in fp16 graphs (default :data:`FP16_BLOCK_LIST`).
        openvino: Add ``openvino-fp32`` and ``openvino-fp16`` (fp16-compressed weights) IR variants.
        torch_program: Keep the PyTorch program as the ``torch-fp32`` variant (the reference backend).
        preprocessing: A :class:`Preprocessing`, or a preset name (``imagenet``, ``unit``, ``centered``).
        labels: Class names, or a file of them (see :func:`~infership.convert.preprocessing.read_labels`).
        name: Artifact name (default: the directory name).
        overwrite: Replace an existing artifact directory.
        strict: Fail when any requested variant cannot be made or fails its check, instead of leaving it
            out and recording why.
        progress: Step-level progress callback (see :data:`ProgressCallback`).

    Returns:
        The committed :class:`Artifact`.

    Raises:
        ConversionError: Loading, exporting or (with ``strict``) a requested variant failed.
        ValidationError: The fp32 ONNX export disagrees with PyTorch beyond ``tolerance``; ``exc.validation``
            holds the figures.
        ArtifactError: ``output_dir`` exists and ``overwrite`` is False.
    """
    out = Path(output_dir)
    if out.exists() and any(out.iterdir()) and not overwrite:
        raise ConversionError(f"{out} exists and is not empty (pass overwrite=True / --force to replace it)")
    tol32 = tolerance or Tolerance.fp32()
    tol16 = fp16_tolerance or Tolerance.fp16()
    simplifier = _simplifier(simplify)
    planned = ["load", "export", "check"] + ["simplify"] * (simplifier is not Simplifier.NONE)
    planned += (
        ["torch"] * torch_program
        + ["fp16"] * fp16
        + ["openvino-fp32", "openvino-fp16"] * openvino
        + ["write"]
    )
    tick = _Ticker(progress, len(planned))

    tick("load model")
    src = load_model_source(model_or_source, arch=arch, num_classes=num_classes, allow_pickle=allow_pickle)
    examples = example_tensors(example_inputs, input_shapes, input_dtypes, seed=seed)
    in_names = _input_names(input_names, src, len(examples))
    out_names = _output_names(output_names, src, examples)
    axes = _resolve_axes(src, in_names, examples, dynamic_batch, dynamic_axes)
    traced = export_batch(examples, axes, in_names)

    with tempfile.TemporaryDirectory(prefix="infership-build-") as tmp_name:
        tmp = Path(tmp_name)
        tick("export to ONNX")
        program, capture_step = src.program, None
        want_program = torch_program or Exporter(exporter) is not Exporter.TORCHSCRIPT
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
        )
        inputs, outputs = read_onnx_specs(raw)
        base = Manifest(name=name or out.name, inputs=inputs, outputs=outputs)
        pre = _resolve_preprocessing(preprocessing, inputs)
        label_names = _resolve_labels(labels, outputs)
        feeds = random_feeds(examples, in_names, axes, count=samples, seed=seed)
        real = real_feeds(validation_data, inputs, pre)
        feeds, refs, notes = _reference(src, feeds, out_names)
        refs += torch_outputs(src.model, real, out_names)
        check = _Checker(tmp, base, feeds + real, refs, n_real=len(real), notes=notes)

        tick("check ONNX against PyTorch")
        validation, check_step = check.run("onnx-fp32", "onnx", "fp32", [raw.name], "ort-cpu", tol32)
        if (
            not validation["passed"]
            and export_step.result["exporter"] == "dynamo"
            and Exporter(exporter) is Exporter.AUTO
        ):
            export_step, validation, check_step = _retry_torchscript(
                src, traced, raw, in_names, out_names, axes, opset, check, tol32, validation
            )
        if not validation["passed"]:
            raise _validation_error("the exported ONNX model", validation)
        onnx_steps += [export_step, check_step]
        final = raw

        if simplifier is not Simplifier.NONE:
            tick("simplify")
            simplified = tmp / "simplified.onnx"
            written, sstep = simplify_onnx(raw, simplified, simplifier=simplifier)
            if written:
                sval, scheck = check.run("onnx-fp32", "onnx", "fp32", [simplified.name], "ort-cpu", tol32)
                if sval["passed"]:
                    final, validation, check_step = simplified, sval, scheck
                else:
                    why = "simplified graph changed results: " + "; ".join(sval["failures"])
                    log.warning("keeping the unsimplified graph: %s", why)
                    sstep = replace(
                        sstep,
                        result={
                            **sstep.result,
                            "applied": False,
                            "reason": why,
                            "rejected_validation": _summary(sval),
                        },
                    )
            onnx_steps += [sstep] + ([check_step] if final is simplified else [])

        candidates = [
            _Candidate("onnx-fp32", "onnx", "fp32", [final.name], onnx_steps, validation, "ort-cpu")
        ]
        skipped: list[dict[str, Any]] = []

        def attempt(vid: str, desc: str, make: Callable[[], _Candidate]) -> None:
            tick(desc)
            try:
                candidates.append(make())
            except (ConversionError, _Rejected) as exc:
                entry: dict[str, Any] = {"variant": vid, "reason": str(exc)}
                if isinstance(exc, _Rejected):
                    entry["validation"] = exc.validation
                if strict:
                    raise ConversionError(f"{vid}: {exc}") from exc
                log.warning("variant %s left out: %s", vid, exc)
                skipped.append(entry)

        if torch_program:
            attempt(
                "torch-fp32",
                "keep the PyTorch program",
                lambda: _torch_variant(src, program, traced, capture_step, tmp, check, tol32),
            )
        if fp16:
            attempt(
                "onnx-fp16", "fp16 graph", lambda: _fp16_variant(final, tmp, fp16_block_list, check, tol16)
            )
        if openvino:
            for compress in (False, True):
                vid = "openvino-fp16" if compress else "openvino-fp32"
                attempt(
                    vid,
                    f"OpenVINO IR ({vid})",
                    lambda c=compress, v=vid: _openvino_variant(
                        final, tmp, v, c, check, tol16 if c else tol32
                    ),
                )

        tick("write artifact")
        extra: dict[str, Any] = {"source": src.description, "source_kind": src.kind}
        if skipped:
            extra["skipped"] = skipped
        if notes:
            extra["notes"] = notes
        manifest = replace(base, preprocessing=pre, labels=label_names, versions=_versions(), extra=extra)
        with ArtifactWriter.create(out, manifest, overwrite=overwrite) as writer:
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


# ------------------------------------------------------------------------------------------- variants
class _Rejected(Exception):
    """A candidate variant failed its check."""

    def __init__(self, variant_id: str, validation: dict[str, Any]) -> None:
        super().__init__(f"disagrees with PyTorch beyond tolerance: {'; '.join(validation['failures'])}")
        self.variant_id = variant_id
        self.validation = validation


def _torch_variant(
    src: ModelSource,
    program: Any,
    traced: tuple,
    capture_step: Step | None,
    tmp: Path,
    check: _Checker,
    tol: Tolerance,
) -> _Candidate:
    error = capture_step.result.get("error") if capture_step else None
    path, fmt, step = save_torch_program(
        src.kind, src.model, program, traced, tmp / "model", source_file=src.file, capture_error=error
    )
    val, cstep = check.run("torch-fp32", fmt, "fp32", [path.name], "torch", tol)
    if not val["passed"]:
        raise _Rejected("torch-fp32", val)
    steps = [src.step, *([capture_step] if capture_step else []), step, cstep]
    return _Candidate("torch-fp32", fmt, "fp32", [path.name], steps, val, "torch")


def _fp16_variant(
    final: Path, tmp: Path, block_list: Sequence[str] | None, check: _Checker, tol: Tolerance
) -> _Candidate:
    dst = tmp / "model-fp16.onnx"
    step = convert_fp16(final, dst, block_list=block_list)
    val, cstep = check.run("onnx-fp16", "onnx", "fp16", [dst.name], "ort-cpu", tol)
    if not val["passed"]:
        raise _Rejected("onnx-fp16", val)
    # The graph carries its precision (fp16 weights and Casts), as TensorRT 11 requires; ORT CUDA runs it too.
    return _Candidate("onnx-fp16", "onnx", "fp16", [dst.name], [step, cstep], val, "ort-cuda")


def _openvino_variant(
    final: Path, tmp: Path, vid: str, compress: bool, check: _Checker, tol: Tolerance
) -> _Candidate:
    xml = tmp / vid / "model.xml"
    step = convert_openvino(final, xml, compress_to_fp16=compress)
    files = [f"{vid}/model.xml", f"{vid}/model.bin"]
    precision = "fp16" if compress else "fp32"
    val, cstep = check.run(vid, "openvino", precision, files, "openvino", tol)
    if not val["passed"]:
        raise _Rejected(vid, val)
    return _Candidate(vid, "openvino", precision, files, [step, cstep], val, "openvino")


def _retry_torchscript(
    src: ModelSource,
    traced: tuple,
    raw: Path,
    in_names: Sequence[str],
    out_names: Sequence[str],
    axes: Mapping[str, Mapping[int, str]],
    opset: int | None,
    check: _Checker,
    tol: Tolerance,
    failed: dict[str, Any],
) -> tuple[Step, dict[str, Any], Step]:
    """The current exporter's graph disagreed with PyTorch: try the TorchScript-based exporter."""
    why = "dynamo export disagreed with PyTorch: " + "; ".join(failed["failures"])
    log.warning("%s; retrying with the TorchScript-based exporter", why)
    alt = raw.with_name("export-torchscript.onnx")
    try:
        step = export_onnx(
            src.model,
            traced,
            alt,
            input_names=in_names,
            output_names=out_names,
            dynamic_axes=axes,
            opset=opset,
            exporter=Exporter.TORCHSCRIPT,
        )
    except ConversionError as exc:
        raise _validation_error(
            "the exported ONNX model", failed, extra=f"the TorchScript exporter failed too: {exc}"
        ) from exc
    val, cstep = check.run("onnx-fp32", "onnx", "fp32", [alt.name], "ort-cpu", tol)
    if val["passed"]:
        os.replace(alt, raw)
        step = replace(step, result={**step.result, "fallback_reason": why})
    return step, val, cstep


# ------------------------------------------------------------------------------------------- checking
class _Checker:
    """Runs candidate variants through the real backends (via Predictor) and compares with PyTorch."""

    def __init__(
        self,
        root: Path,
        base: Manifest,
        feeds: list[dict],
        refs: list[dict],
        *,
        n_real: int,
        notes: list[str],
    ) -> None:
        self.root, self.base, self.feeds, self.refs = root, base, feeds, refs
        self.n_real, self.notes = n_real, notes
        self.cache = root / "_cache"

    def run(
        self, vid: str, fmt: str, precision: str, files: Sequence[str], backend: str, tol: Tolerance
    ) -> tuple[dict[str, Any], Step]:
        """Load the candidate through ``backend`` and compare it with PyTorch: ``(validation, check step)``."""
        t0 = time.perf_counter()
        entries = tuple(file_entry(self.root, rel) for rel in files)
        variant = Variant(id=vid, format=fmt, precision=precision, files=entries)
        artifact = Artifact(self.root, replace(self.base, variants=(variant,)))
        opts = {"cache_dir": self.cache} if backend == "openvino" else {}
        try:
            with Predictor.load(artifact, backend=backend, variant=vid, **opts) as p:
                got = [p.predict(f) for f in self.feeds]
        except InfershipError as exc:
            raise ConversionError(f"{vid} could not run on {backend}: {exc}") from exc
        val = compare_outputs(self.refs, got, tolerance=tol)
        real_rows = sum(_rows(r) for r in self.refs[len(self.refs) - self.n_real :]) if self.n_real else 0
        val.update(reference="torch eager (the source model)", backend=backend, real_samples=real_rows)
        val["random_samples"] = val["samples"] - real_rows
        val["shapes"] = [{k: list(v.shape) for k, v in f.items()} for f in self.feeds[:8]]
        if self.n_real:
            real = compare_outputs(self.refs[-self.n_real :], got[-self.n_real :], tolerance=tol)
            val["real"] = _summary(real)
        if self.notes:
            val["notes"] = list(self.notes)
        return val, _check_step(val, round(time.perf_counter() - t0, 3))


def _rows(outputs: Mapping[str, Any]) -> int:
    first = next(iter(outputs.values()))
    return int(first.shape[0]) if first.ndim else 1


def _reference(
    src: ModelSource, feeds: list[dict], out_names: Sequence[str]
) -> tuple[list[dict], list[dict], list[str]]:
    """PyTorch outputs for each batch; random batches whose shapes the model itself rejects are dropped."""
    kept, refs, notes = [], [], []
    for i, f in enumerate(feeds):
        try:
            refs += torch_outputs(src.model, [f], out_names)
        except Exception as exc:
            if i == 0:
                raise ConversionError(
                    f"the model fails on its example inputs: {type(exc).__name__}: {exc}"
                ) from exc
            shapes = {k: list(v.shape) for k, v in f.items()}
            notes.append(
                f"PyTorch itself rejects input shapes {shapes} ({type(exc).__name__}); not checked on them"
            )
            log.warning(notes[-1])
            continue
        kept.append(f)
    return kept, refs, notes


def _check_step(val: dict[str, Any], seconds: float | None = None) -> Step:
    params = {"against": "torch", "backend": val.get("backend"), "tolerance": val["tolerance"]}
    return Step("check", params, _summary(val), seconds)


def _summary(val: Mapping[str, Any]) -> dict[str, Any]:
    keys = (
        "passed",
        "max_abs_err",
        "max_rel_err",
        "cosine_min",
        "sqnr_db",
        "top1_agreement",
        "nonfinite",
        "samples",
    )
    return {k: val[k] for k in keys if k in val}


def _validation_error(what: str, val: dict[str, Any], extra: str = "") -> ValidationError:
    s = _summary(val)
    figures = ", ".join(
        f"{k}={v:.3g}" if isinstance(v, float) else f"{k}={v}" for k, v in s.items() if k != "passed"
    )
    msg = f"{what} disagrees with PyTorch beyond tolerance: {'; '.join(val['failures'])} ({figures})"
    if extra:
        msg += f"; {extra}"
    err = ValidationError(msg)
    err.validation = val  # type: ignore[attr-defined]
    return err


# ------------------------------------------------------------------------------------------- resolving
def _simplifier(value: bool | Simplifier | str) -> Simplifier:
    if value is True:
        return Simplifier.AUTO
    if value is False:
        return Simplifier.NONE
    return Simplifier(value)


def _input_names(given: Sequence[str] | None, src: ModelSource, n: int) -> list[str]:
    if given is not None:
        if len(given) != n:
            raise ConversionError(f"{len(given)} input names given for {n} example inputs")
        return list(given)
    if len(src.input_names) == n:
        return list(src.input_names)
    return ["input"] if n == 1 else [f"input{i}" for i in range(n)]


def _output_names(given: Sequence[str] | None, src: ModelSource, examples: tuple) -> list[str]:
    import torch

    try:
        with torch.inference_mode():
            result = src.model(*examples)
    except Exception as exc:
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
        name_outputs(result, names)
    except (ValueError, AttributeError) as exc:
        raise ConversionError(
            f"model outputs: {exc} (a tensor, a tuple/list of tensors or a dict of tensors is expected)"
        ) from exc
    return names


def _resolve_axes(
    src: ModelSource,
    names: Sequence[str],
    examples: tuple,
    dynamic_batch: bool | None,
    dynamic_axes: Mapping[str, Mapping[int, str] | Sequence[int]] | None,
) -> dict[str, dict[int, str]]:
    if src.program is not None and dynamic_batch is None and dynamic_axes is None:
        return _program_axes(src.program, names)
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


def _program_axes(program: Any, names: Sequence[str]) -> dict[str, dict[int, str]]:
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


def _resolve_preprocessing(pre: Preprocessing | str | None, inputs: Sequence[Any]) -> Preprocessing | None:
    if pre is None:
        return None
    images = [s for s in inputs if s.rank == 4]
    if isinstance(pre, str):
        if len(images) != 1:
            raise ConversionError(
                f"preprocessing preset {pre!r} needs exactly one rank-4 image input; inputs: {[s.name for s in inputs]}"
            )
        return make_preprocessing(pre, images[0])
    spec = next((s for s in inputs if s.name == pre.input), None)
    if spec is None:
        raise ConversionError(
            f"preprocessing names input {pre.input!r}; the model's inputs are {[s.name for s in inputs]}"
        )
    check_preprocessing(pre, spec)
    return pre


def _resolve_labels(
    labels: Sequence[str] | str | os.PathLike[str] | None, outputs: Sequence[Any]
) -> tuple[str, ...] | None:
    if labels is None:
        return None
    names = read_labels(labels) if isinstance(labels, (str, os.PathLike)) else tuple(str(x) for x in labels)
    check_labels(names, outputs)
    return names


def _artifact_name(cand: _Candidate, rel: str) -> str:
    if cand.format == "openvino":
        return rel
    return {"onnx-fp32": "model.onnx", "onnx-fp16": "model-fp16.onnx"}.get(cand.id, rel)


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
