"""PyTorch's own static int8, as a measured peer: FX graph mode with the x86 backend, saved as TorchScript.

This is the route PyTorch's tutorials show (``prepare_fx`` → calibrate → ``convert_fx``), so benchmarks can
show what infership's ONNX Runtime and OpenVINO variants gain over what PyTorch alone gives. The quantized
module is traced and frozen to TorchScript, which the ``torch`` backend loads with ``torch.jit.load``.

``torch.ao.quantization`` and ``torch.jit`` are deprecated in torch 2.x (their successors, PT2E and
``torch.compile``, do not produce a file that runs quantized kernels without compiling first); the
deprecation warnings are silenced here and the route is recorded in the step.
"""

from __future__ import annotations

import copy
import time
import warnings
from pathlib import Path
from typing import Any

from infership.calibration.dataset import CalibrationSet
from infership.runtime.errors import ConversionError, InvalidInputError
from infership.runtime.manifest import Step
from infership.runtime.spec import TensorSpec


def _example(cset: CalibrationSet, inputs: tuple[TensorSpec, ...]) -> tuple[Any, ...]:
    import torch

    feeds = cset.first().feeds
    return tuple(torch.from_numpy(feeds[s.name]) for s in inputs)


def _save_traced(module: Any, example: tuple[Any, ...], out_path: Path, what: str) -> None:
    """Trace ``module`` on ``example``, freeze it and save it as TorchScript.

    Raises:
        ConversionError: Tracing or saving failed.
    """
    import torch

    try:
        with torch.no_grad():
            scripted = torch.jit.freeze(torch.jit.trace(module, example).eval())
        out_path.parent.mkdir(parents=True, exist_ok=True)
        torch.jit.save(scripted, str(out_path))
    except Exception as exc:  # tracing runs arbitrary model code and raises arbitrary errors
        raise ConversionError(
            f"tracing or saving the torch {what} model failed: {type(exc).__name__}: {exc}"
        ) from exc


def trace_fp32(model: Any, cset: CalibrationSet, inputs: tuple[TensorSpec, ...], out_path: Path) -> None:
    """Save the fp32 ``nn.Module`` as TorchScript, traced and frozen the way :func:`quantize_torch` saves
    the int8 one, so both can be timed on the ``torch`` backend alike.

    Raises:
        ConversionError: Tracing or saving failed.
    """
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=FutureWarning)
        warnings.filterwarnings("ignore", category=DeprecationWarning)
        _save_traced(copy.deepcopy(model).eval().cpu(), _example(cset, inputs), out_path, "fp32")


def quantize_torch(
    model: Any,
    cset: CalibrationSet,
    inputs: tuple[TensorSpec, ...],
    out_path: Path,
    *,
    backend: str = "x86",
) -> Step:
    """Quantize an ``nn.Module`` with FX graph mode, calibrate it on ``cset``, save it as TorchScript.

    Args:
        model: The fp32 ``torch.nn.Module`` (it is copied, not changed).
        cset: Calibration data bound to the model's inputs.
        inputs: The model's input specs, in the order ``forward`` takes them.
        out_path: Where the TorchScript file goes.
        backend: The quantized engine and qconfig (``"x86"``; ``"qnnpack"`` for ARM).

    Returns:
        The step, with the engine and the number of quantized modules.

    Raises:
        InvalidInputError: ``model`` is not an ``nn.Module`` or the backend is not in this torch build.
        ConversionError: FX tracing, conversion or TorchScript tracing failed.
    """
    import torch
    from torch.ao.quantization import get_default_qconfig_mapping
    from torch.ao.quantization.quantize_fx import convert_fx, prepare_fx

    if not isinstance(model, torch.nn.Module):
        raise InvalidInputError(f"torch int8 needs the fp32 nn.Module, got {type(model).__name__}")
    if backend not in torch.backends.quantized.supported_engines:
        raise InvalidInputError(
            f"quantized engine {backend!r} is not in this torch build; it has {torch.backends.quantized.supported_engines}"
        )
    start = time.perf_counter()
    names = [s.name for s in inputs]

    def args(feeds: dict[str, Any]) -> tuple[Any, ...]:
        return tuple(torch.from_numpy(feeds[n]) for n in names)

    example = _example(cset, inputs)
    torch.backends.quantized.engine = backend
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=FutureWarning)
        warnings.filterwarnings("ignore", category=DeprecationWarning)
        warnings.filterwarnings("ignore", message=".*quant_min and quant_max.*")
        warnings.filterwarnings("ignore", message=".*torch.ao.quantization is deprecated.*")
        warnings.filterwarnings("ignore", message=".*quantized tensor creation functions.*")
        try:
            fp32 = copy.deepcopy(model).eval().cpu()
            prepared = prepare_fx(fp32, get_default_qconfig_mapping(backend), example)
        except Exception as exc:  # FX tracing fails with arbitrary errors on untraceable code
            raise ConversionError(
                f"FX graph mode could not trace the model ({type(exc).__name__}: {str(exc)[:300]}); "
                "control flow on tensor values is not traceable"
            ) from exc
        batches = 0
        with torch.no_grad():
            for feeds in cset:
                prepared(*args(feeds))
                batches += 1
        try:
            quantized = convert_fx(prepared)
        except Exception as exc:  # conversion raises arbitrary errors
            raise ConversionError(
                f"converting the torch int8 model failed: {type(exc).__name__}: {exc}"
            ) from exc
        _save_traced(quantized, example, out_path, "int8")
    n_quantized = sum(
        1 for m in quantized.modules() if type(m).__module__.startswith("torch.ao.nn.quantized")
    )
    return Step(
        "torch.ao.quantize_fx",
        params={
            "engine": backend,
            "qconfig": f"get_default_qconfig_mapping({backend!r})",
            "format": "torchscript",
        },
        result={"quantized_modules": n_quantized, "calibration_batches": batches, "torch": torch.__version__},
        seconds=round(time.perf_counter() - start, 3),
    )
