"""OpenVINO int8 through NNCF post-training quantization, saved as IR.

The fp32 ONNX model is read by OpenVINO (``ov.Core().read_model``; with
``NncfQuantConfig(graph="converted")`` through ``openvino.convert_model``, which folds shape subgraphs and
fuses activations first), quantized with ``nncf.quantize`` over the same calibration set as ONNX Runtime,
and saved as IR (``.xml`` + ``.bin``). Nodes to keep in float are named by their ONNX node names, as in
the ONNX Runtime path; they are mapped to the OpenVINO operations the ONNX frontend made from them
(``/conv/Conv`` → ``/conv/Conv/WithoutBiases`` and ``/conv/Conv``), and NNCF validates that every one
exists.
"""

from __future__ import annotations

import contextlib
import enum
import io
import logging
import time
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

from infership.calibration.dataset import CalibrationSet
from infership.runtime.errors import ConversionError, InvalidInputError
from infership.runtime.manifest import Step

from .ort import CalibrationMethod
from .types import choice

log = logging.getLogger(__name__)


class NncfPreset(str, enum.Enum):
    """NNCF quantization presets."""

    PERFORMANCE = "performance"
    """Symmetric weights and activations: fastest on CPUs."""
    MIXED = "mixed"
    """Symmetric weights, asymmetric activations: more accurate for activations that are not centred."""


class NncfRange(str, enum.Enum):
    """How NNCF derives activation ranges from the statistics (``RangeEstimatorParametersSet``)."""

    DEFAULT = "default"
    """NNCF's choice for the preset (the mean over samples of per-sample min/max for CNNs): robust to
    outliers on large sets, but it clips tensors whose per-sample maximum varies a lot."""
    MINMAX = "minmax"
    """Global min/max over the calibration set, as ONNX Runtime's MinMax method."""
    MEAN_MINMAX = "mean_minmax"
    MEAN_QUANTILE = "mean_quantile"
    """Mean of per-sample quantiles: drops the extreme values, like the Percentile method."""
    HISTOGRAM = "histogram"
    """Histogram-based search for the range with least quantization error."""


#: The NNCF activation range estimator closest to each calibration method, so that both runtimes calibrate
#: comparable ranges from one ``method`` setting.
NNCF_RANGE_FOR_METHOD = {
    CalibrationMethod.MINMAX: NncfRange.MINMAX,
    CalibrationMethod.PERCENTILE: NncfRange.MEAN_QUANTILE,
    CalibrationMethod.ENTROPY: NncfRange.HISTOGRAM,
}


#: The OpenVINO graphs of an ONNX model NNCF can quantize (:attr:`NncfQuantConfig.graph`).
GRAPHS = ("onnx", "converted")


@dataclass(frozen=True, kw_only=True)
class NncfQuantConfig:
    """Options of NNCF post-training quantization for OpenVINO.

    Start from a preset (:meth:`cpu`, :meth:`accurate`, :meth:`transformer`).

    Args:
        preset: :class:`NncfPreset`.
        fast_bias_correction: NNCF's fast bias correction (``False`` runs the slower, more exact one).
        activation_range: :class:`NncfRange`.
        transformer: Use NNCF's transformer model type (keeps sensitive ops such as LayerNorm in float and
            applies SmoothQuant).
        target_device: NNCF target device (``"CPU"`` or ``"ANY"``).
        subset_size: Calibration samples NNCF uses (``None``: the whole calibration set).
        ignored_nodes: ONNX node names kept in float.
        ignored_types: OpenVINO operation types kept in float (e.g. ``("Multiply",)``).
        smooth_quant_alpha: SmoothQuant's migration strength for MatMuls (0-1), or ``None`` for NNCF's default
            (0.95 with the transformer type). With a budget, ``quantize`` tries a few for a transformer before
            keeping anything in float (:data:`~infership.convert.int8.build.SMOOTH_QUANT_ALPHAS`).
        graph: Which OpenVINO graph of the ONNX model NNCF quantizes: ``"onnx"`` (``Core.read_model``: the
            ONNX graph as read, node for node) or ``"converted"`` (``openvino.convert_model``: the graph
            OpenVINO's own conversion makes — shape subgraphs folded, ``Clip`` as ``Clamp``, the graph
            ``ovc`` saves and NNCF's own examples quantize). The two place their quantizers differently,
            so they differ in speed and in accuracy; neither wins on every model.
        preset_name: Name of the preset this config came from (recorded).
    """

    preset: NncfPreset = NncfPreset.PERFORMANCE
    fast_bias_correction: bool = True
    activation_range: NncfRange = NncfRange.DEFAULT
    transformer: bool = False
    target_device: str = "CPU"
    subset_size: int | None = None
    ignored_nodes: tuple[str, ...] = ()
    ignored_types: tuple[str, ...] = ()
    smooth_quant_alpha: float | None = None
    graph: str = "onnx"
    preset_name: str | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "preset", choice(NncfPreset, self.preset, "NNCF preset"))
        object.__setattr__(
            self, "activation_range", choice(NncfRange, self.activation_range, "activation_range")
        )
        object.__setattr__(self, "ignored_nodes", tuple(self.ignored_nodes))
        object.__setattr__(self, "ignored_types", tuple(self.ignored_types))
        if self.target_device not in ("CPU", "ANY", "GPU", "NPU", "CPU_SPR"):
            raise InvalidInputError(
                f"target_device must be CPU, ANY, GPU, NPU or CPU_SPR, got {self.target_device!r}"
            )
        if self.graph not in GRAPHS:
            raise InvalidInputError(f"graph must be one of {', '.join(GRAPHS)}, got {self.graph!r}")
        if self.subset_size is not None and self.subset_size < 1:
            raise InvalidInputError(f"subset_size must be >= 1, got {self.subset_size}")
        alpha = self.smooth_quant_alpha
        if alpha is not None and (
            isinstance(alpha, bool) or not isinstance(alpha, (int, float)) or not 0 <= alpha <= 1
        ):
            raise InvalidInputError(
                f"smooth_quant_alpha must be a number from 0 to 1 (or None), got {alpha!r}"
            )

    @classmethod
    def cpu(cls, **changes: Any) -> NncfQuantConfig:
        """The fast CPU default: performance preset, fast bias correction."""
        return cls(**{"preset_name": "cpu", **changes})

    @classmethod
    def accurate(cls, **changes: Any) -> NncfQuantConfig:
        """Mixed preset and full bias correction: slower to quantize, usually closer to fp32."""
        base = {"preset_name": "accurate", "preset": NncfPreset.MIXED, "fast_bias_correction": False}
        return cls(**{**base, **changes})

    @classmethod
    def transformer_model(cls, **changes: Any) -> NncfQuantConfig:
        """Transformers: NNCF's transformer model type with the mixed preset."""
        base = {"preset_name": "transformer", "preset": NncfPreset.MIXED, "transformer": True}
        return cls(**{**base, **changes})

    def excluding(self, *, nodes: Sequence[str] = (), types: Sequence[str] = ()) -> NncfQuantConfig:
        """A copy that also keeps ONNX ``nodes`` and OpenVINO op ``types`` in float."""
        return replace(
            self,
            ignored_nodes=self.ignored_nodes + tuple(n for n in nodes if n not in self.ignored_nodes),
            ignored_types=self.ignored_types + tuple(t for t in types if t not in self.ignored_types),
        )

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["preset"] = self.preset.value
        d["activation_range"] = self.activation_range.value
        d["ignored_nodes"] = list(self.ignored_nodes)
        d["ignored_types"] = list(self.ignored_types)
        return d


# ---------------------------------------------------------------------------------------------- names
@contextlib.contextmanager
def quiet_logger(name: str) -> Any:
    """Keep a chatty library logger (ONNX Runtime's quantizers log every node at INFO, NNCF every ignored
    operation) to WARNING while it works."""
    logger = logging.getLogger(name)
    old = logger.level
    logger.setLevel(max(old, logging.WARNING))
    try:
        yield
    finally:
        logger.setLevel(old)


def import_nncf() -> tuple[Any, bool]:
    """``nncf``, imported keeping the application's level for its logger (importing it resets the level to
    INFO), and whether the application had set one."""
    level = logging.getLogger("nncf").level
    import nncf

    if level != logging.NOTSET:
        logging.getLogger("nncf").setLevel(level)
    return nncf, level != logging.NOTSET


def ov_ops_for_onnx_nodes(ov_model: Any, onnx_nodes: Iterable[str]) -> list[str]:
    """The OpenVINO operation names that the ONNX frontend made from ``onnx_nodes``.

    Raises:
        InvalidInputError: A node has no counterpart in the OpenVINO model.
    """
    ops = [op.get_friendly_name() for op in ov_model.get_ordered_ops() if op.get_type_name() != "Constant"]
    out: list[str] = []
    missing = []
    for node in onnx_nodes:
        found = [o for o in ops if o == node or o.startswith(node + "/")]
        if not found:
            missing.append(node)
        out.extend(o for o in found if o not in out)
    if missing:
        raise InvalidInputError(
            f"ONNX nodes {missing} have no operation in the OpenVINO model (fused or renamed?)"
        )
    return out


# ---------------------------------------------------------------------------------------------- quantize
def read_onnx(path: Path, graph: str = "onnx") -> Any:
    """The ONNX model at ``path`` as an OpenVINO model: as read (``graph="onnx"``) or as
    ``openvino.convert_model`` makes it (``"converted"``).

    Raises:
        ConversionError: OpenVINO cannot read it.
    """
    import openvino as ov

    try:
        if graph == "converted":
            return ov.convert_model(str(path))
        return ov.Core().read_model(str(path))
    except Exception as exc:  # OpenVINO raises RuntimeError subclasses with C++ messages
        raise ConversionError(f"OpenVINO cannot read {path.name}: {str(exc).strip()[:400]}") from exc


def quantize_openvino(
    onnx_path: Path,
    cset: CalibrationSet,
    config: NncfQuantConfig,
    out_xml: Path,
    *,
    show_progress: bool = False,
) -> Step:
    """Quantize the fp32 ONNX model with NNCF over ``cset`` and save the int8 IR as ``out_xml`` (+ ``.bin``).

    Args:
        onnx_path: The fp32 ONNX model.
        cset: Calibration data bound to the model's inputs.
        config: NNCF options.
        out_xml: Where the IR goes; the ``.bin`` lands next to it.
        show_progress: Let NNCF draw its progress bars (otherwise its console output is captured and logged).

    Returns:
        The step, with the ignored OpenVINO operations and the number of FakeQuantize nodes.

    Raises:
        InvalidInputError: An ignored node or type does not exist in the model.
        ConversionError: NNCF failed or produced a model without quantization.
    """
    nncf, app_level = import_nncf()
    import openvino as ov

    start = time.perf_counter()
    model = read_onnx(onnx_path, config.graph)
    ignored_ops = ov_ops_for_onnx_nodes(model, config.ignored_nodes) if config.ignored_nodes else []
    scope = None
    if ignored_ops or config.ignored_types:
        scope = nncf.IgnoredScope(names=ignored_ops, types=list(config.ignored_types), validate=True)
    subset = min(config.subset_size or len(cset), len(cset))
    from infership.calibration.adapters import to_nncf_dataset

    kwargs: dict[str, Any] = {
        "preset": nncf.QuantizationPreset(config.preset.value),
        "target_device": nncf.TargetDevice(config.target_device),
        "subset_size": subset,
        "fast_bias_correction": config.fast_bias_correction,
        "ignored_scope": scope,
    }
    if config.transformer:
        kwargs["model_type"] = nncf.ModelType.TRANSFORMER
    advanced: dict[str, Any] = {}
    if config.activation_range is not NncfRange.DEFAULT:
        from nncf.quantization.range_estimator import RangeEstimatorParametersSet

        estimator = getattr(RangeEstimatorParametersSet, config.activation_range.name)
        advanced["activations_range_estimator_params"] = estimator
    if config.smooth_quant_alpha is not None:
        from nncf.quantization.advanced_parameters import AdvancedSmoothQuantParameters

        advanced["smooth_quant_alphas"] = AdvancedSmoothQuantParameters(
            matmul=float(config.smooth_quant_alpha)
        )
    if advanced:
        from nncf.quantization.advanced_parameters import AdvancedQuantizationParameters

        kwargs["advanced_parameters"] = AdvancedQuantizationParameters(**advanced)
    captured = io.StringIO()
    quiet = contextlib.nullcontext() if show_progress else contextlib.redirect_stdout(captured)
    # NNCF logs each ignored operation at INFO through its own handler on the process's stdout (which
    # redirect_stdout does not reach): quiet unless the application set NNCF's level itself.
    quiet_log = contextlib.nullcontext() if app_level else quiet_logger("nncf")
    try:
        with quiet, quiet_log:
            quantized = nncf.quantize(model, to_nncf_dataset(cset), **kwargs)
    except nncf.ValidationError as exc:
        raise InvalidInputError(f"NNCF refused the ignored scope: {exc}") from exc
    except Exception as exc:  # NNCF and OpenVINO raise many native types
        raise ConversionError(f"nncf.quantize failed: {type(exc).__name__}: {str(exc)[:500]}") from exc
    if captured.getvalue().strip():
        log.debug("nncf output:\n%s", captured.getvalue())
    fq = sum(1 for op in quantized.get_ordered_ops() if op.get_type_name() == "FakeQuantize")
    if fq == 0:
        raise ConversionError("NNCF produced a model without any FakeQuantize node (nothing was quantized)")
    out_xml.parent.mkdir(parents=True, exist_ok=True)
    try:
        ov.save_model(quantized, str(out_xml), compress_to_fp16=False)
    except Exception as exc:  # see read_onnx
        raise ConversionError(f"saving the int8 IR failed: {exc}") from exc
    return Step(
        "nncf.quantize",
        params={**config.to_dict(), "subset_size": subset, "ignored_ops": ignored_ops},
        result={"fake_quantize_nodes": fq},
        seconds=round(time.perf_counter() - start, 3),
    )
