"""Add validated static int8 variants to an artifact: ONNX Runtime (QDQ), OpenVINO (NNCF) and PyTorch.

:func:`quantize` takes an artifact with an ``onnx-fp32`` variant and a calibration set, and for each target
calibrates, quantizes, validates against the fp32 reference on data held out from calibration, and — when
an accuracy budget is given and missed — repairs the model by keeping its worst layers in float. All new
variants are written in one atomic update of the artifact: if any target misses the budget, nothing is
written and :class:`AccuracyBudgetError` (carrying the full report) is raised.
"""

from __future__ import annotations

import enum
import logging
import os
import tempfile
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from infership.calibration.dataset import CalibrationSet
from infership.runtime.artifact import Artifact, ArtifactWriter
from infership.runtime.errors import ArtifactError, InvalidInputError, ValidationError
from infership.runtime.manifest import Step

from . import evaluate as qe
from .metrics import Int8Metrics
from .openvino import NncfQuantConfig, NncfRange
from .ort import CalibrationMethod, OrtQuantConfig
from .outlook import Int8Outlook, int8_outlook
from .repair import RepairResult

log = logging.getLogger(__name__)


class Target(str, enum.Enum):
    """Which int8 variant to build."""

    ORT = "ort"
    """ONNX Runtime QDQ model (variant ``onnx-int8``)."""
    OPENVINO = "openvino"
    """OpenVINO IR quantized by NNCF (variant ``openvino-int8``)."""
    TORCH = "torch"
    """PyTorch FX int8 saved as TorchScript (variant ``torch-int8``); needs the fp32 ``nn.Module``."""

    @classmethod
    def parse(cls, values: str | Iterable[str | Target]) -> tuple[Target, ...]:
        """``"ort"``, ``"ort,openvino"``, ``"all"`` or a list of those → targets, in order, without repeats.

        Raises:
            InvalidInputError: An unknown name.
        """
        items = values.split(",") if isinstance(values, str) else list(values)
        out: list[Target] = []
        for item in items:
            text = item.value if isinstance(item, Target) else str(item).strip().lower()
            try:
                found = list(cls) if text == "all" else [cls(text)]
            except ValueError as exc:
                raise InvalidInputError(
                    f"unknown target {text!r}: expected ort, openvino, torch or all"
                ) from exc
            out.extend(t for t in found if t not in out)
        return tuple(out)


VARIANT_IDS = {Target.ORT: "onnx-int8", Target.OPENVINO: "openvino-int8", Target.TORCH: "torch-int8"}
#: The NNCF activation range estimator closest to each ONNX Runtime calibration method.
NNCF_RANGE_FOR_METHOD = {
    CalibrationMethod.MINMAX: NncfRange.MINMAX,
    CalibrationMethod.PERCENTILE: NncfRange.MEAN_QUANTILE,
    CalibrationMethod.ENTROPY: NncfRange.HISTOGRAM,
}


@dataclass(frozen=True)
class TargetReport:
    """The outcome for one target.

    Attributes:
        target: The target.
        variant_id: The variant written (or that would have been).
        metrics: Final figures against fp32 on the held-out set.
        latency_ms: Median batch-1 latency of the final int8 model.
        fp32_latency_ms: The same for the fp32 model on the same runtime (torch: eager).
        passed: Within the accuracy budget (always true without one).
        repair: The ranking/repair record (steps with accuracy and latency), if the budget was checked.
        excluded_nodes: ONNX nodes kept in float in the final model.
        steps: The manifest steps of the variant.
    """

    target: Target
    variant_id: str
    metrics: Int8Metrics
    latency_ms: float
    fp32_latency_ms: float | None
    passed: bool
    repair: RepairResult | None = None
    excluded_nodes: tuple[str, ...] = ()
    steps: tuple[Step, ...] = field(default=(), repr=False)

    @property
    def speedup(self) -> float | None:
        if not self.fp32_latency_ms or not self.latency_ms:
            return None
        return self.fp32_latency_ms / self.latency_ms

    def to_dict(self) -> dict[str, Any]:
        return {
            "target": self.target.value,
            "variant": self.variant_id,
            "passed": self.passed,
            "metrics": self.metrics.to_dict(),
            "latency_ms": round(self.latency_ms, 4),
            "fp32_latency_ms": None if self.fp32_latency_ms is None else round(self.fp32_latency_ms, 4),
            "speedup": None if self.speedup is None else round(self.speedup, 3),
            "excluded_nodes": list(self.excluded_nodes),
            "repair": self.repair.to_dict() if self.repair else None,
        }


@dataclass(frozen=True)
class QuantizeReport:
    """Everything :func:`quantize` did, per target."""

    artifact: str
    targets: tuple[TargetReport, ...]
    calibration: dict[str, Any]
    holdout: dict[str, Any]
    outlook: Int8Outlook
    max_accuracy_drop: float | None
    committed: bool

    @property
    def passed(self) -> bool:
        return all(t.passed for t in self.targets)

    def to_dict(self) -> dict[str, Any]:
        return {
            "artifact": self.artifact,
            "passed": self.passed,
            "committed": self.committed,
            "max_accuracy_drop": self.max_accuracy_drop,
            "calibration": self.calibration,
            "holdout": self.holdout,
            "int8_outlook": self.outlook.to_dict(),
            "targets": [t.to_dict() for t in self.targets],
        }


class AccuracyBudgetError(ValidationError):
    """An int8 variant lost more accuracy than allowed, even after repair. Nothing was written.

    Attributes:
        report: The :class:`QuantizeReport` (with ``committed=False``).
    """

    def __init__(self, message: str, report: QuantizeReport) -> None:
        super().__init__(message)
        self.report = report


@dataclass(frozen=True)
class _Context:
    artifact: Artifact
    src: Path
    calib: CalibrationSet
    holdout: CalibrationSet
    rank_set: CalibrationSet
    ref: qe.Reference
    budget: float | None
    repair: bool
    max_steps: int
    latency_runs: int
    tmp: Path
    progress: bool


def quantize(
    artifact: str | os.PathLike[str] | Artifact,
    calibration: CalibrationSet | str,
    *,
    targets: str | Iterable[str | Target] = (Target.ORT, Target.OPENVINO),
    method: CalibrationMethod | str | None = None,
    ort_config: OrtQuantConfig | None = None,
    nncf_config: NncfQuantConfig | None = None,
    samples: int | None = 128,
    holdout: CalibrationSet | str | None = None,
    holdout_fraction: float = 0.2,
    holdout_samples: int | None = None,
    max_accuracy_drop: float | None = None,
    repair: bool = True,
    max_repair_steps: int = 5,
    rank_samples: int = 16,
    torch_model: Any = None,
    latency_runs: int = 20,
    progress: bool = False,
) -> QuantizeReport:
    """Calibrate, quantize, validate and (if needed) repair int8 variants, and add them to the artifact.

    Args:
        artifact: Artifact directory (or loaded :class:`Artifact`) with an ``onnx-fp32`` variant.
        calibration: A :class:`CalibrationSet`, or a source string (``digits``, a ``.npy``/``.npz`` file, an
            image folder; see :func:`infership.calibration.from_spec`).
        targets: ``ort``, ``openvino``, ``torch`` (or ``all``).
        method: Calibration method for both runtimes (MinMax ↔ NNCF ``minmax`` range, Percentile ↔
            ``mean_quantile``, Entropy ↔ ``histogram``). Default: MinMax, or the method of ``ort_config``.
        ort_config: ONNX Runtime options (default :meth:`OrtQuantConfig.cpu_vnni`).
        nncf_config: NNCF options (default :meth:`NncfQuantConfig.cpu` with the range matching ``method``).
        samples: Calibration samples drawn from the calibration set (``None``: all).
        holdout: Held-out validation data; default: ``holdout_fraction`` of the calibration set, split off
            before sampling, so validation never sees a calibration sample.
        holdout_fraction: Share held out when ``holdout`` is not given.
        holdout_samples: Cap on held-out samples (``None``: all).
        max_accuracy_drop: Allowed accuracy drop in points (top-1 disagreement without labels). When
            missed after repair, nothing is written and :class:`AccuracyBudgetError` is raised.
        repair: Exclude the worst layers until the budget is met (needs ``max_accuracy_drop``).
        max_repair_steps: Most exclusion steps per target.
        rank_samples: Samples used to rank layers by quantization error.
        torch_model: The fp32 ``nn.Module`` (or a source accepted by ``load_model_source``) for ``torch``.
        latency_runs: Timed batch-1 runs per latency figure.
        progress: Show progress bars (calibration, NNCF) on the console.

    Returns:
        The :class:`QuantizeReport`; the artifact now holds the new variants (``committed=True``).

    Raises:
        ArtifactError: No ``onnx-fp32`` variant.
        InvalidInputError: Calibration data that does not fit the model (before any work), bad options.
        AccuracyBudgetError: A target missed ``max_accuracy_drop`` (nothing written).
        ConversionError: A runtime failed while calibrating, quantizing or running.
    """
    from infership.calibration.sources import from_spec

    art = artifact if isinstance(artifact, Artifact) else Artifact.load(artifact)
    manifest = art.manifest
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
    art.verify(fp32)
    src = art.path_of(fp32.files[0])

    def as_set(data: CalibrationSet | str) -> CalibrationSet:
        if isinstance(data, CalibrationSet):
            return data
        return from_spec(str(data), preprocessing=manifest.preprocessing, class_names=manifest.labels)

    cset = as_set(calibration).bind(manifest.inputs)  # refuses mismatching data before any work
    if holdout is None:
        pool, held = cset.split(1.0 - holdout_fraction)
    else:
        pool, held = cset, as_set(holdout).bind(manifest.inputs)
    calib = pool.sample(samples) if samples is not None else pool
    if holdout_samples is not None:
        held = held.sample(holdout_samples)
    ort_cfg, nncf_cfg = _configs(method, ort_config, nncf_config)
    if Target.ORT in chosen:
        outlook = int8_outlook(
            activation_type=ort_cfg.activation_type.value,
            reduce_range=ort_cfg.reduce_range,
            target=ort_cfg.target,
        )
    else:
        outlook = int8_outlook()
    log.info("calibration: %d samples; held out: %d samples", len(calib), len(held))

    with tempfile.TemporaryDirectory(prefix="infership-int8-") as tmp:
        ctx = _Context(
            artifact=art,
            src=src,
            calib=calib,
            holdout=held,
            rank_set=calib.sample(min(rank_samples, len(calib)), seed=1).with_batch_size(2),
            ref=qe.reference(qe.ort_runner(src), held),
            budget=max_accuracy_drop,
            repair=repair,
            max_steps=max_repair_steps,
            latency_runs=latency_runs,
            tmp=Path(tmp),
            progress=progress,
        )
        from . import build as qt

        built: list[tuple[TargetReport, list[Path]]] = []
        for target in chosen:
            if target is Target.ORT:
                built.append(qt.build_ort(ctx, ort_cfg))
            elif target is Target.OPENVINO:
                built.append(qt.build_openvino(ctx, nncf_cfg))
            else:
                built.append(qt.build_torch(ctx, torch_model))
        reports = tuple(r for r, _ in built)
        report = QuantizeReport(
            artifact=str(art.root),
            targets=reports,
            calibration=calib.describe(),
            holdout=held.describe(),
            outlook=outlook,
            max_accuracy_drop=max_accuracy_drop,
            committed=False,
        )
        failed = [r for r in reports if not r.passed]
        if failed:
            detail = "; ".join(
                f"{r.target.value}: drop {r.metrics.drop:.2f} points"
                + (f" after excluding {len(r.excluded_nodes)} node(s)" if r.excluded_nodes else "")
                for r in failed
            )
            raise AccuracyBudgetError(
                f"int8 misses the accuracy budget of {max_accuracy_drop} points ({detail}); nothing was written. "
                "Raise --max-accuracy-drop, allow more repair steps, try another --method, or build only the "
                "targets that pass (--target).",
                report,
            )
        _commit(art, built, report)
    return replace(report, committed=True)


def _configs(
    method: CalibrationMethod | str | None,
    ort_config: OrtQuantConfig | None,
    nncf_config: NncfQuantConfig | None,
) -> tuple[OrtQuantConfig, NncfQuantConfig]:
    ort_cfg = ort_config or OrtQuantConfig.cpu_vnni()
    if method is not None:
        try:
            ort_cfg = replace(ort_cfg, method=CalibrationMethod(method))
        except ValueError as exc:
            choices = ", ".join(m.value for m in CalibrationMethod)
            raise InvalidInputError(f"calibration method must be one of {choices}, got {method!r}") from exc
    nncf_cfg = nncf_config or NncfQuantConfig.cpu(activation_range=NNCF_RANGE_FOR_METHOD[ort_cfg.method])
    return ort_cfg, nncf_cfg


def _commit(art: Artifact, built: Sequence[tuple[TargetReport, list[Path]]], report: QuantizeReport) -> None:
    from .build import variant_fields

    with ArtifactWriter.update(art) as writer:
        for rep, files in built:
            names = [writer.add_file(f, _artifact_name(rep.target, f)) for f in files]
            writer.put_variant(rep.variant_id, files=names, **variant_fields(rep, report))
        writer.commit()


def _artifact_name(target: Target, path: Path) -> str:
    if target is Target.OPENVINO:
        return f"openvino-int8/model{path.suffix}"
    if target is Target.TORCH:
        return "model-int8.torchscript"
    return "model-int8.onnx"
