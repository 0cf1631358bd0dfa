"""Add validated int8 variants to an artifact: ONNX Runtime (QDQ, or dynamic for transformers), OpenVINO
(NNCF, or int8 weights) and PyTorch.

:func:`quantize` takes an artifact with an ``onnx-fp32`` variant and a calibration set, and for each target
calibrates, quantizes, validates against the fp32 reference on data held out from calibration, and — when
an accuracy budget is given and missed — repairs the model by keeping its worst layers in float. All new
variants are written in one atomic update of the artifact: if any target misses the budget, nothing is
written and :class:`~infership.convert.int8.types.AccuracyBudgetError` (carrying the full report) is raised.

Text models (an artifact with a tokenizer, from ``hf:PATH``) get transformer defaults: targets ``ort-dynamic``
and ``openvino``, NNCF's transformer model type (SmoothQuant), the MatMul-only static preset for ``ort``, and
calibration from text (``.txt`` / ``.tsv`` files or lists of strings, tokenized with the artifact's tokenizer).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
from infership.calibration.dataset import CalibrationSet
from infership.calibration.text import from_texts
from infership.runtime.artifact import Artifact, ArtifactWriter
from infership.runtime.atomic import scratch_dir
from infership.runtime.errors import ArtifactError, InfershipError, InvalidInputError
from infership.runtime.manifest import Manifest
from infership.runtime.routing import RouteTable, with_routes
from infership.runtime.statistics import REFERENCE_KEY, reference_statistics
from infership.runtime.tasks import Task, judge_for
from infership.runtime.text import encoder_for

from ..resolve import check_task
from . import build
from . import evaluate as ev
from .openvino import NNCF_RANGE_FOR_METHOD, NncfQuantConfig
from .ort import CalibrationMethod, IntType, OrtQuantConfig
from .outlook import int8_outlook
from .routes import measure_routes
from .transformer import OrtDynamicConfig
from .types import (
    HOLDOUT_FRACTION,
    INT8,
    AccuracyBudgetError,
    QuantizeContext,
    QuantizeReport,
    Target,
    TargetReport,
    choice,
)

log = logging.getLogger(__name__)

#: The op types ONNX Runtime quantizes in a detector unless told otherwise: the backbone and heads.
DETECTOR_OP_TYPES = ("Conv", "MatMul", "Gemm")

__all__ = ["quantize"]


def quantize(
    artifact: str | os.PathLike[str] | Artifact,
    calibration: CalibrationSet | str | Sequence[str],
    *,
    targets: str | Iterable[str | Target] | None = None,
    method: CalibrationMethod | str | None = None,
    ort_config: OrtQuantConfig | None = None,
    nncf_config: NncfQuantConfig | None = None,
    dynamic_config: OrtDynamicConfig | None = None,
    samples: int | None = 128,
    holdout: CalibrationSet | str | Sequence[str] | None = None,
    holdout_fraction: float = HOLDOUT_FRACTION,
    holdout_samples: int | None = None,
    max_accuracy_drop: float | None = None,
    repair: bool = True,
    max_repair_steps: int = 5,
    rank_samples: int = 16,
    torch_model: Any = None,
    latency_runs: int = 20,
    task: Task | str | None = None,
    routes: bool = True,
    keep_passing: bool = False,
    progress: bool = False,
) -> QuantizeReport:
    """Calibrate, quantize, validate and (if needed) repair int8 variants, and add them to the artifact.

    Args:
        artifact: Artifact directory (or loaded :class:`Artifact`) with an ``onnx-fp32`` variant.
        calibration: A :class:`CalibrationSet`, or a source string for
            :func:`infership.calibration.from_spec`: a ``.npy``/``.npz`` file or a folder of them, an image
            folder (read through the artifact's preprocessing), a ``.txt``/``.tsv`` file of texts (through
            the artifact's tokenizer), ``FILE.py:FUNCTION`` / ``MODULE:FUNCTION`` returning the data, or
            ``SCHEME:ARGUMENT`` for a registered source (``numpy:PATH``, ``images:FOLDER``, ``text:PATH``,
            or one added with :func:`~infership.calibration.register_source`); or a list of strings for an
            artifact that takes text.
        targets: ``ort``, ``openvino``, ``torch`` (or ``all``), ``ort-tensor``, ``openvino-ir``,
            ``ort-dynamic``, ``openvino-weights``.
            Default: ``ort-dynamic,openvino,openvino-weights`` for transformer text models, else ``ort,openvino``.
        method: Calibration method for both runtimes (MinMax ↔ NNCF ``minmax`` range, Percentile ↔
            ``mean_quantile``, Entropy ↔ ``histogram``). Default: MinMax, or the method of ``ort_config``.
        ort_config: ONNX Runtime options (default :meth:`OrtQuantConfig.cpu_vnni`; for transformer text models
            :meth:`OrtQuantConfig.transformer`).
        nncf_config: NNCF options (default :meth:`NncfQuantConfig.cpu` with the range matching ``method``;
            for transformer text models :meth:`NncfQuantConfig.transformer_model`).
        dynamic_config: ``ort-dynamic`` options (default :meth:`OrtDynamicConfig.mixed`).
        samples: Calibration samples drawn from the calibration set (``None``: all).
        holdout: Held-out validation data; default: ``holdout_fraction`` of the calibration set, split off
            before sampling, so validation never sees a calibration sample.
        holdout_fraction: Share held out when ``holdout`` is not given (default :data:`HOLDOUT_FRACTION`).
        holdout_samples: Cap on held-out samples (``None``: all).
        max_accuracy_drop: Allowed accuracy drop in points (top-1 disagreement without labels). When
            missed after repair, nothing is written and :class:`AccuracyBudgetError` is raised.
        repair: Exclude the worst layers until the budget is met (needs ``max_accuracy_drop``).
        max_repair_steps: Most exclusion steps per target.
        rank_samples: Samples used to rank layers by quantization error.
        torch_model: The fp32 ``nn.Module`` (or a source accepted by ``load_model_source``) for ``torch``.
        latency_runs: Timed batch-1 runs per latency figure.
        task: Set the artifact's task (``tensor`` or ``classification``) before anything is judged; it
            decides the figures and the loss the budget is checked against, and is recorded in the
            manifest with the new variants. Default: the artifact's own task.
        routes: For an artifact that takes text, with a budget: time the int8 variants that meet it at
            sequence lengths 8 to 512 and record which serves which lengths
            (:mod:`infership.convert.int8.routes`), so ``Predictor.load(path, precision="int8")`` routes
            each batch by its length.
        keep_passing: When some targets miss the budget and others meet it, write those that meet it (the
            report still lists every target, with ``passed``) instead of writing nothing.
        progress: Show progress bars (calibration, NNCF) on the console.

    Returns:
        The :class:`QuantizeReport`; the artifact now holds the new variants (``committed=True``).

    Raises:
        ArtifactError: No ``onnx-fp32`` variant.
        InvalidInputError: Before any work: calibration data that does not fit the model, bad options, a
            ``task`` the model's outputs cannot serve, or a budget the task gives no figure for (``tensor``:
            no class scores to agree on, no accuracy to drop).
        AccuracyBudgetError: A target missed ``max_accuracy_drop`` (nothing written), or every target did
            with ``keep_passing``.
        ConversionError: A runtime failed while calibrating, quantizing or running.
    """
    from infership.calibration import from_spec

    art = artifact if isinstance(artifact, Artifact) else Artifact.load(artifact)
    if task is not None:
        wanted = Task.parse(task)
        check_task(wanted, art.manifest.outputs)
        # Judged by this task from here on, and committed with the new variants.
        art = Artifact(art.root, replace(art.manifest, task=wanted), derived=art.derived)
    manifest = art.manifest
    text = is_transformer_text(manifest)
    if targets is None:
        targets = (
            (Target.ORT_DYNAMIC, Target.OPENVINO, Target.OPENVINO_WEIGHTS)
            if text
            else (Target.ORT, Target.OPENVINO)
        )
    chosen = Target.parse(targets)
    if not chosen:
        raise InvalidInputError("no target given: expected ort, openvino, torch or all")
    if Target.TORCH in chosen and torch_model is None:
        raise InvalidInputError("target torch needs the fp32 model: pass torch_model= (CLI: --torch-model)")
    if max_accuracy_drop is not None and max_accuracy_drop < 0:
        raise InvalidInputError(f"max_accuracy_drop must be >= 0 points, got {max_accuracy_drop}")
    fp32 = manifest.find(formats=("onnx",), precision="fp32")
    if fp32 is None:
        raise ArtifactError(
            f"artifact {manifest.name!r} has no onnx fp32 variant to quantize; export one first"
        )
    _check_budget_figure(manifest, max_accuracy_drop)
    art.verify(fp32)
    src = art.path_of(fp32.files[0])

    encoder = encoder_for(manifest, art.root)

    def as_set(data: CalibrationSet | str | Sequence[str]) -> CalibrationSet:
        if isinstance(data, CalibrationSet):
            return data
        if isinstance(data, (list, tuple)):
            if encoder is None:
                raise InvalidInputError(
                    "texts were given, but the artifact has no tokenizer to read them with"
                )
            return from_texts(list(data), encoder)
        return from_spec(
            str(data), preprocessing=manifest.preprocessing, class_names=manifest.labels, tokenizer=encoder
        )

    cset = as_set(calibration).bind(manifest.inputs)  # refuses mismatching data before any work
    if holdout is None:
        pool, held = cset.split(1.0 - holdout_fraction)
    else:
        pool, held = cset, as_set(holdout).bind(manifest.inputs)
    calib = pool.sample(samples) if samples is not None else pool
    if holdout_samples is not None:
        held = held.sample(holdout_samples)
    ort_cfg, nncf_cfg = _configs(method, ort_config, nncf_config, transformer=text)
    if manifest.task is Task.DETECTION and ort_cfg.op_types is None:
        # Detectors: backbone and heads in int8; box decoding, NMS and score filtering stay float.
        ort_cfg = replace(ort_cfg, op_types=DETECTOR_OP_TYPES)
    if Target.ORT in chosen:
        outlook = int8_outlook(
            activation_type=ort_cfg.activation_type.value,
            reduce_range=ort_cfg.reduce_range,
            target=ort_cfg.target,
        )
    else:
        outlook = int8_outlook()
    log.info("calibration: %d samples; held out: %d samples", len(calib), len(held))

    with scratch_dir("int8") as tmp:
        ctx = QuantizeContext(
            artifact=art,
            src=src,
            calib=calib,
            holdout=held,
            rank_set=_rank_set(calib, rank_samples),
            ref=ev.reference(art, fp32, held, scratch=Path(tmp)),
            budget=max_accuracy_drop,
            repair=repair,
            max_steps=max_repair_steps,
            latency_runs=latency_runs,
            tmp=Path(tmp),
            progress=progress,
        )
        built: list[tuple[TargetReport, list[Path]]] = []
        for target in chosen:
            if target is Target.ORT:
                built.append(build.build_ort(ctx, ort_cfg))
            elif target is Target.ORT_TENSOR:
                # The same options with quantize_static's own: one scale per weight tensor, int8 activations.
                tensor_cfg = replace(
                    ort_cfg, per_channel=False, activation_type=IntType.INT8, preset="per_tensor"
                )
                built.append(build.build_ort(ctx, tensor_cfg, Target.ORT_TENSOR))
            elif target is Target.OPENVINO:
                built.append(build.build_openvino(ctx, nncf_cfg))
            elif target is Target.OPENVINO_IR:
                ir_cfg = replace(nncf_cfg, graph="converted")
                built.append(build.build_openvino(ctx, ir_cfg, Target.OPENVINO_IR))
            elif target is Target.ORT_DYNAMIC:
                built.append(build.build_ort_dynamic(ctx, dynamic_config or OrtDynamicConfig.mixed()))
            elif target is Target.OPENVINO_WEIGHTS:
                built.append(build.build_openvino_weights(ctx))
            else:
                built.append(build.build_torch(ctx, torch_model))
        reports = tuple(r for r, _ in built)
        report = QuantizeReport(
            artifact=str(art.root),
            targets=reports,
            calibration=calib.describe(),
            holdout=held.describe(),
            outlook=outlook,
            max_accuracy_drop=max_accuracy_drop,
            committed=False,
            reference=ctx.ref.describe(),
        )
        failed = [r for r in reports if not r.passed]
        if failed and not (keep_passing and len(failed) < len(reports)):
            detail = "; ".join(
                f"{r.target.value}: drop {_points(r)} points"
                + (f" after excluding {len(r.excluded_nodes)} node(s)" if r.excluded_nodes else "")
                for r in failed
            )
            raise AccuracyBudgetError(
                f"int8 misses the accuracy budget of {max_accuracy_drop} points ({detail}); nothing was written. "
                "Raise --max-accuracy-drop, allow more repair steps, try another --method, or keep the "
                "targets that pass (--keep-passing, or --target).",
                report,
            )
        if failed:
            log.warning(
                "kept the targets within budget; left out: %s", ", ".join(r.target.value for r in failed)
            )
        kept = [(r, files) for r, files in built if r.passed]
        table = measure_routes(ctx, kept) if routes else None
        if table is not None:
            report = replace(report, routes=table.to_dict())
        stats = _reference_statistics(art, held, ctx.ref.outputs)
        _commit(art, kept, report, table, stats)
    return replace(report, committed=True)


def _rank_set(calib: CalibrationSet, samples: int) -> CalibrationSet:
    """The few calibration samples layer ranking runs the fp32 model on: batches of two, or the model's
    fixed batch size when it has one (a detector takes one image per run)."""
    picked = calib.sample(min(samples, len(calib)), seed=1)
    return picked if picked.drop_last else picked.with_batch_size(2)


def _check_budget_figure(manifest: Manifest, budget: float | None) -> None:
    """Refuse a budget the artifact's task gives no figure for, before any data is read or model run.

    The task's judge is asked rather than the task named here: it compares outputs of the manifest's
    shapes with themselves, and the record it returns has a loss figure (``Agreement.loss_points``) or not.
    """
    if budget is None:
        return
    judge = judge_for(manifest.task)
    # ones, not zeros: a detector's probe must hold detections (score 1) for its judge to compare any
    probe = {
        s.name: np.ones([d if isinstance(d, int) else 2 for d in s.shape], s.dtype) for s in manifest.outputs
    }
    if judge.compare([probe], [probe]).loss_points is None:
        raise InvalidInputError(
            f"max_accuracy_drop needs a loss figure, and the artifact's task {judge.task.value!r} "
            "gives none (no class scores to agree on, no accuracy to drop); set the task (quantize(task=...), "
            "--task classification) or quantize without a budget"
        )


def _points(rep: TargetReport) -> str:
    loss = rep.metrics.loss_points
    return "unknown" if loss is None else f"{loss:.2f}"


def _configs(
    method: CalibrationMethod | str | None,
    ort_config: OrtQuantConfig | None,
    nncf_config: NncfQuantConfig | None,
    *,
    transformer: bool = False,
) -> tuple[OrtQuantConfig, NncfQuantConfig]:
    ort_cfg = ort_config or (OrtQuantConfig.transformer() if transformer else OrtQuantConfig.cpu_vnni())
    if method is not None:
        ort_cfg = replace(ort_cfg, method=choice(CalibrationMethod, method, "calibration method"))
    if nncf_config is not None:
        return ort_cfg, nncf_config
    if transformer:  # NNCF's transformer type picks its own ranges (SmoothQuant) unless a method was asked
        extra = {"activation_range": NNCF_RANGE_FOR_METHOD[ort_cfg.method]} if method is not None else {}
        return ort_cfg, NncfQuantConfig.transformer_model(**extra)
    return ort_cfg, NncfQuantConfig.cpu(activation_range=NNCF_RANGE_FOR_METHOD[ort_cfg.method])


def is_transformer_text(manifest: Manifest) -> bool:
    """Whether the artifact is a transformer that takes text (it carries a tokenizer): it gets the
    transformer int8 defaults."""
    return manifest.tokenizer is not None


def variant_fields(rep: TargetReport, report: QuantizeReport) -> dict[str, Any]:
    """The manifest fields of a target's variant (everything but its id and files)."""
    backend = rep.target.backend
    if rep.target in (Target.ORT, Target.ORT_TENSOR):  # the backend the QDQ model was tuned for (ort-cpu...)
        backend = next((s.params.get("target") for s in rep.steps if s.name == "quantize_static"), backend)
    return {
        "format": rep.target.format,
        "precision": INT8,
        "steps": list(rep.steps),
        "validation": report.validation(rep),
        "calibration": report.calibration,
        "target": backend,
    }


def _commit(
    art: Artifact,
    built: Sequence[tuple[TargetReport, list[Path]]],
    report: QuantizeReport,
    table: RouteTable | None,
    stats: dict[str, Any] | None = None,
) -> None:
    with ArtifactWriter.update(art) as writer:
        for rep, files in built:
            names = [writer.add_file(f, rep.target.artifact_name(f)) for f in files]
            writer.put_variant(rep.variant_id, files=names, **variant_fields(rep, report))
        if stats is not None:
            writer.set_manifest(extra={**writer.manifest.extra, REFERENCE_KEY: stats})
        if table is not None:
            writer.set_manifest(extra=with_routes(writer.manifest, INT8, table).extra)
        writer.commit()


def _reference_statistics(
    art: Artifact, held: CalibrationSet, outputs: Sequence[Any]
) -> dict[str, Any] | None:
    """What serving compares live traffic with (drift monitoring): the held-out inputs and the fp32
    reference's outputs on them (a calibration set yields the same batches on every pass, so the inputs
    read again here are those the reference ran on). A failure here must not cost the quantization:
    logged, not raised."""
    try:
        info = held.describe()
        what = ", ".join(f"{k}={v}" for k, v in info.items() if isinstance(v, (str, int, float)))
        return reference_statistics(
            (b.feeds for b in held.batches()),
            outputs,
            task=art.manifest.task,
            source=f"held-out data ({what})",
        )
    # Statistics are an aid to monitoring: outputs they cannot summarise (refused, or shaped in a way the
    # summaries do not expect) must not cost the int8 variants just validated; the warning says why.
    except (InfershipError, ValueError, TypeError) as exc:
        log.warning("no reference statistics recorded (drift monitoring stays off): %s", exc)
        return None
