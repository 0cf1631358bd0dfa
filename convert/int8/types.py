"""The int8 package's own types: targets and where their variants go, and the records every step reports.

This is the bottom of :mod:`infership.convert.int8`: it imports nothing else from the package, and every
other module of the package reads its targets, variant ids, artifact file names and reports from here.
Figures themselves are :class:`~infership.runtime.figures.Agreement` records (one typed record for every
check in infership); the records here add what int8 does with them (latency, repair steps, the budget).
"""

from __future__ import annotations

import enum
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import numpy as np
from infership.runtime.errors import InvalidInputError, ValidationError
from infership.runtime.figures import Agreement
from infership.runtime.manifest import Step

if TYPE_CHECKING:
    from infership.calibration.dataset import CalibrationSet
    from infership.runtime.artifact import Artifact

#: The precision of every variant this package writes.
INT8 = "int8"

#: The share of the calibration data held out for validation when no separate held-out set is given
#: (``quantize(holdout_fraction=...)``, ``--holdout-fraction``); split off before calibration samples are drawn.
HOLDOUT_FRACTION = 0.2

_E = TypeVar("_E", bound=enum.Enum)


def choice(kind: type[_E], value: Any, what: str) -> _E:
    """``value`` as a member of the enum ``kind``.

    Raises:
        InvalidInputError: ``value`` names no member (the message lists them).
    """
    try:
        return kind(value)
    except ValueError as exc:
        choices = ", ".join(str(m.value) for m in kind)
        raise InvalidInputError(f"{what} must be one of {choices}, got {value!r}") from exc


# ---------------------------------------------------------------------------------------------- targets
@dataclass(frozen=True)
class TargetLayout:
    """Where one target's variant lives and how it is run.

    Attributes:
        variant_id: The manifest variant id.
        format: The variant's format (what the backends open).
        backend: The backend int8 validation runs the candidate on (and the variant's default target).
        file_pattern: The artifact file name of each model file, ``{suffix}`` being the file's suffix.
    """

    variant_id: str
    format: str
    backend: str
    file_pattern: str


#: The one table of variant ids, formats, backends and artifact file names, by target name.
LAYOUTS: Mapping[str, TargetLayout] = {
    "ort": TargetLayout("onnx-int8", "onnx", "ort-cpu", "model-int8{suffix}"),
    "ort-tensor": TargetLayout("onnx-int8-tensor", "onnx", "ort-cpu", "model-int8-tensor{suffix}"),
    "openvino": TargetLayout("openvino-int8", "openvino", "openvino", "openvino-int8/model{suffix}"),
    "openvino-ir": TargetLayout("openvino-int8-ir", "openvino", "openvino", "openvino-int8-ir/model{suffix}"),
    "torch": TargetLayout("torch-int8", "torchscript", "torch", "model-int8{suffix}"),
    "ort-dynamic": TargetLayout("onnx-int8-dynamic", "onnx", "ort-cpu", "model-int8-dynamic{suffix}"),
    "openvino-weights": TargetLayout(
        "openvino-int8-weights", "openvino", "openvino", "openvino-int8-weights/model{suffix}"
    ),
}


class Target(str, enum.Enum):
    """Which int8 variant to build."""

    ORT = "ort"
    """ONNX Runtime QDQ model (variant ``onnx-int8``)."""
    ORT_TENSOR = "ort-tensor"
    """ONNX Runtime QDQ model with ``quantize_static``'s own recipe — one scale per weight tensor, int8
    activations (variant ``onnx-int8-tensor``): on a small model its graph can run faster than the
    per-channel one; ``infership optimize`` makes it as one more candidate, kept only within the budget."""
    OPENVINO = "openvino"
    """OpenVINO IR quantized by NNCF (variant ``openvino-int8``)."""
    OPENVINO_IR = "openvino-ir"
    """OpenVINO IR quantized by NNCF from the graph ``openvino.convert_model`` makes of the fp32 ONNX model
    (variant ``openvino-int8-ir``) — the graph OpenVINO's own recipe quantizes, with shape subgraphs folded
    and activations fused — rather than the ONNX graph as read. Its quantizers sit elsewhere, so it can run
    faster (MobileNetV2's throughput in docs/optimize.md's suite) or lose more accuracy (EfficientNet-B0);
    ``infership optimize`` makes it as one more candidate, kept only within the budget."""
    TORCH = "torch"
    """PyTorch FX int8 saved as TorchScript (variant ``torch-int8``); needs the fp32 ``nn.Module``."""
    ORT_DYNAMIC = "ort-dynamic"
    """ONNX Runtime dynamic int8 for transformers (variant ``onnx-int8-dynamic``; no calibration)."""
    OPENVINO_WEIGHTS = "openvino-weights"
    """OpenVINO with int8 weights from NNCF weight compression (variant ``openvino-int8-weights``)."""

    @classmethod
    def parse(cls, values: str | Iterable[str | Target]) -> tuple[Target, ...]:
        """``"ort"``, ``"ort,openvino"``, ``"all"`` or a list of those → targets, in order, without repeats.
        ``all`` is the three calibrated targets (``ort``, ``openvino``, ``torch``); name ``ort-tensor``,
        ``openvino-ir`` and the transformer recipes (``ort-dynamic``, ``openvino-weights``) explicitly.

        Raises:
            InvalidInputError: An unknown name.
        """
        items = values.split(",") if isinstance(values, str) else list(values)
        out: list[Target] = []
        for item in items:
            text = item.value if isinstance(item, Target) else str(item).strip().lower()
            try:
                found = [cls.ORT, cls.OPENVINO, cls.TORCH] if text == "all" else [cls(text)]
            except ValueError as exc:
                raise InvalidInputError(
                    f"unknown target {text!r}: expected ort, openvino, torch, ort-tensor, ort-dynamic, "
                    "openvino-ir, openvino-weights or all"
                ) from exc
            out.extend(t for t in found if t not in out)
        return tuple(out)

    @property
    def layout(self) -> TargetLayout:
        """This target's row of :data:`LAYOUTS`."""
        return LAYOUTS[self.value]

    @property
    def variant_id(self) -> str:
        """The manifest variant id (``onnx-int8``, ``openvino-int8``, ``torch-int8``)."""
        return self.layout.variant_id

    @property
    def format(self) -> str:
        """The variant's format (``onnx``, ``openvino``, ``torchscript``)."""
        return self.layout.format

    @property
    def backend(self) -> str:
        """The backend validation runs this target's candidates on (``ort-cpu``, ``openvino``, ``torch``)."""
        return self.layout.backend

    def artifact_name(self, path: Path) -> str:
        """The artifact file name of model file ``path`` (only its suffix counts)."""
        return self.layout.file_pattern.format(suffix=path.suffix)


# ---------------------------------------------------------------------------------------------- outlook
@dataclass(frozen=True)
class Int8Outlook:
    """What to expect from int8 on this machine.

    Attributes:
        int8_support: The CPU's best int8 path (:attr:`~infership.runtime.hardware.CpuInfo.int8_support`).
        verdict: ``"fast"``, ``"limited"`` or ``"slow"``.
        notes: Sentences explaining the verdict and what to do about it.
    """

    int8_support: str
    verdict: str
    notes: tuple[str, ...]

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready."""
        return {"int8_support": self.int8_support, "verdict": self.verdict, "notes": list(self.notes)}


# ---------------------------------------------------------------------------------------------- evaluation
@dataclass(frozen=True)
class Reference:
    """The fp32 model's outputs on the held-out set: what every candidate is compared with.

    Attributes:
        outputs: Output name → array, one mapping per held-out batch.
        labels: Class labels of the held-out samples, when the data has them and the task scores them.
        sample: One input batch for latency runs (batch 1 unless the model has a fixed batch size).
        variant_id: The variant the reference ran (``onnx-fp32``).
        backend: The backend it ran on.
    """

    outputs: tuple[Mapping[str, np.ndarray], ...]
    labels: np.ndarray | None
    sample: Mapping[str, np.ndarray]
    variant_id: str
    backend: str

    def describe(self) -> str:
        """``"onnx-fp32 on ort-cpu"``: recorded with every validation."""
        return f"{self.variant_id} on {self.backend}"


@dataclass(frozen=True)
class Evaluation:
    """One candidate measured on the held-out set: its agreement with the reference, its latency, and
    the backend it ran on."""

    metrics: Agreement
    latency_ms: float
    backend: str = ""


@dataclass(frozen=True)
class QuantizeContext:
    """What every target's build reads: the artifact, the data, the reference and the budget.

    Attributes:
        artifact: The artifact being quantized.
        src: Its fp32 ONNX model file.
        calib: Calibration samples.
        holdout: Held-out validation samples.
        rank_set: The few samples layer ranking runs on.
        ref: The fp32 reference on ``holdout``.
        budget: The allowed loss in points (``None``: no budget).
        repair: Whether to repair a model over budget.
        max_steps: Most repair steps.
        latency_runs: Timed calls per latency figure.
        tmp: Scratch directory for candidate files (removed after the run).
        progress: Show progress bars.
    """

    artifact: Artifact
    src: Path
    calib: CalibrationSet
    holdout: CalibrationSet
    rank_set: CalibrationSet
    ref: Reference
    budget: float | None
    repair: bool
    max_steps: int
    latency_runs: int
    tmp: Path
    progress: bool

    @property
    def repair_budget(self) -> float | None:
        """The budget the repair loop works towards (``None`` when repair is off)."""
        return self.budget if self.repair else None

    def within_budget(self, metrics: Agreement) -> bool:
        """Whether ``metrics`` meets the budget (always, without one)."""
        loss = metrics.loss_points
        return self.budget is None or (loss is not None and loss <= self.budget)


# ---------------------------------------------------------------------------------------------- repair
@dataclass(frozen=True)
class LayerError:
    """Quantization error introduced at one activation tensor.

    Attributes:
        tensor: The ONNX tensor name.
        nodes: ONNX nodes that quantize it (producer and consumers): what excluding it means.
        channel_sqnr_db: Mean per-channel SQNR in dB (the ranking score; lower is worse).
        sqnr_db: SQNR of the whole tensor in dB.
    """

    tensor: str
    nodes: tuple[str, ...]
    channel_sqnr_db: float
    sqnr_db: float

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready, rounded to 0.01 dB."""
        return {
            "tensor": self.tensor,
            "nodes": list(self.nodes),
            "channel_sqnr_db": round(self.channel_sqnr_db, 2),
            "sqnr_db": round(self.sqnr_db, 2),
        }


@dataclass(frozen=True)
class RepairStep:
    """One step of the repair loop: what was excluded and what the model then measured."""

    step: int
    excluded: tuple[str, ...]
    tensor: str | None
    channel_sqnr_db: float | None
    metrics: Agreement
    latency_ms: float
    action: str = "float"
    """What happened to ``excluded``: ``float`` (kept in float), or ``blockwise`` (dynamic int8's ``mixed``
    mode: moved from one scale per tensor to per-block quantization, still int8)."""

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready; ``loss_points`` is what the budget is checked against."""
        loss = self.metrics.loss_points
        return {
            "step": self.step,
            "action": self.action,
            "excluded": list(self.excluded),
            "tensor": self.tensor,
            "channel_sqnr_db": None if self.channel_sqnr_db is None else round(self.channel_sqnr_db, 2),
            "loss_points": None if loss is None else round(loss, 4),
            "latency_ms": round(self.latency_ms, 4),
            "metrics": self.metrics.to_dict(),
        }


@dataclass(frozen=True)
class RepairResult:
    """The outcome of the repair loop: every step (step 0 is the unrepaired model) and the exclusions."""

    steps: tuple[RepairStep, ...]
    excluded: tuple[str, ...]
    within_budget: bool
    ranking: tuple[LayerError, ...] = field(default=())
    stopped: str = ""
    blockwise: tuple[str, ...] = ()
    """Nodes the repair moved to per-block int8 instead of float (dynamic int8's ``mixed`` mode)."""

    @property
    def final(self) -> RepairStep:
        """The last step: the model that is kept."""
        return self.steps[-1]

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready, with the five worst layers of the ranking."""
        return {
            "within_budget": self.within_budget,
            "stopped": self.stopped,
            "excluded_nodes": list(self.excluded),
            **({"blockwise_nodes": list(self.blockwise)} if self.blockwise else {}),
            "steps": [s.to_dict() for s in self.steps],
            "worst_layers": [e.to_dict() for e in self.ranking[:5]],
        }


# ---------------------------------------------------------------------------------------------- reports
@dataclass(frozen=True)
class TargetReport:
    """The outcome for one target.

    Attributes:
        target: The target.
        variant_id: The variant written (or that would have been).
        metrics: Final figures against the fp32 reference on the held-out set.
        latency_ms: Median batch-1 latency of the final int8 model.
        fp32_latency_ms: The same for the fp32 model on the same backend (``None`` when there is none).
        passed: Within the accuracy budget (always true without one).
        backend: The backend the candidate was validated on.
        repair: The ranking/repair record (steps with figures and latency), if the budget was checked.
        excluded_nodes: ONNX nodes kept in float in the final model.
        steps: The manifest steps of the variant.
    """

    target: Target
    variant_id: str
    metrics: Agreement
    latency_ms: float
    fp32_latency_ms: float | None
    passed: bool
    backend: str = ""
    repair: RepairResult | None = None
    excluded_nodes: tuple[str, ...] = ()
    steps: tuple[Step, ...] = field(default=(), repr=False)

    @property
    def speedup(self) -> float | None:
        """fp32 latency over int8 latency on the same backend."""
        if not self.fp32_latency_ms or not self.latency_ms:
            return None
        return self.fp32_latency_ms / self.latency_ms

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready."""
        return {
            "target": self.target.value,
            "variant": self.variant_id,
            "backend": self.backend,
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
    """Everything :func:`~infership.convert.int8.quantize` did, per target."""

    artifact: str
    targets: tuple[TargetReport, ...]
    calibration: dict[str, Any]
    holdout: dict[str, Any]
    outlook: Int8Outlook
    max_accuracy_drop: float | None
    committed: bool
    reference: str = ""
    routes: dict[str, Any] | None = None

    @property
    def passed(self) -> bool:
        """Every target met the budget."""
        return all(t.passed for t in self.targets)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready."""
        return {
            "artifact": self.artifact,
            "passed": self.passed,
            "committed": self.committed,
            "max_accuracy_drop": self.max_accuracy_drop,
            "reference": self.reference,
            "calibration": self.calibration,
            "holdout": self.holdout,
            "int8_outlook": self.outlook.to_dict(),
            "targets": [t.to_dict() for t in self.targets],
            **({"routes": self.routes} if self.routes else {}),
        }

    def validation(self, rep: TargetReport) -> dict[str, Any]:
        """The ``validation`` entry of ``rep``'s manifest variant: the figures of :class:`Agreement` plus
        what int8 adds (the reference, the backend, the budget and whether it passed, latency, exclusions,
        the held-out data and the CPU outlook)."""
        loss = rep.metrics.loss_points
        extras = {
            "reference": self.reference,
            "backend": rep.backend,
            "passed": rep.passed,
            "loss_points": loss,
            "max_accuracy_drop": self.max_accuracy_drop,
            "latency_ms": round(rep.latency_ms, 4),
            "fp32_latency_ms": None if rep.fp32_latency_ms is None else round(rep.fp32_latency_ms, 4),
            "excluded_nodes": list(rep.excluded_nodes),
            "holdout": self.holdout,
            "int8_outlook": self.outlook.to_dict(),
        }
        return {**rep.metrics.to_dict(), **{k: v for k, v in extras.items() if v is not None}}


class AccuracyBudgetError(ValidationError):
    """An int8 variant lost more accuracy than allowed, even after repair. Nothing was written.

    Attributes:
        report: The :class:`QuantizeReport` (with ``committed=False``).
    """

    def __init__(self, message: str, report: QuantizeReport) -> None:
        super().__init__(message)
        self.report = report
