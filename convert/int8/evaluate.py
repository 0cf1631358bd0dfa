"""Running candidate int8 models on held-out data: their outputs against the fp32 reference, and latency.

Candidates are opened directly with their runtime (they are not in the artifact yet while being judged),
with the same settings the Predictor's backends use: ONNX Runtime with all graph optimizations on the CPU
provider; OpenVINO on CPU with the LATENCY hint; TorchScript under ``torch.inference_mode``.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from infership.calibration.dataset import CalibrationSet
from infership.runtime.errors import ConversionError

from .metrics import compare_int8
from .repair import Evaluation

#: feeds → the model's first output.
Runner = Callable[[Mapping[str, np.ndarray]], np.ndarray]


def ort_runner(path: Path) -> Runner:
    """Run an ONNX model with ONNX Runtime on the CPU provider (all graph optimizations)."""
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    try:
        sess = ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])
    except Exception as exc:  # ORT raises its own native types
        raise ConversionError(f"ONNX Runtime cannot open {path.name}: {exc}") from exc
    first = sess.get_outputs()[0].name

    def run(feeds: Mapping[str, np.ndarray]) -> np.ndarray:
        return sess.run([first], dict(feeds))[0]

    return run


def openvino_runner(path: Path) -> Runner:
    """Run an OpenVINO IR (or ONNX) model on CPU with the LATENCY hint."""
    import openvino as ov

    core = ov.Core()
    config: dict[str, Any] = {"PERFORMANCE_HINT": "LATENCY"}
    if path.suffix == ".onnx":
        config["INFERENCE_PRECISION_HINT"] = "f32"  # the fp32 reference must not run in bf16 on AMX CPUs
    try:
        compiled = core.compile_model(core.read_model(str(path)), "CPU", config)
    except Exception as exc:  # OpenVINO raises RuntimeError subclasses with C++ messages
        raise ConversionError(f"OpenVINO cannot compile {path.name}: {str(exc)[:400]}") from exc
    request = compiled.create_infer_request()

    def run(feeds: Mapping[str, np.ndarray]) -> np.ndarray:
        return np.array(request.infer(dict(feeds))[0], copy=True)

    return run


def torch_runner(module: Any, input_names: tuple[str, ...]) -> Runner:
    """Run a torch module (eager or TorchScript) under ``inference_mode``."""
    import torch

    def run(feeds: Mapping[str, np.ndarray]) -> np.ndarray:
        with torch.inference_mode():
            out = module(*[torch.from_numpy(np.ascontiguousarray(feeds[n])) for n in input_names])
        if isinstance(out, (tuple, list)):
            out = out[0]
        elif isinstance(out, Mapping):
            out = next(iter(out.values()))
        return out.detach().cpu().numpy()

    return run


@dataclass(frozen=True)
class Reference:
    """fp32 outputs on the held-out set, its labels, and one sample for latency runs."""

    outputs: np.ndarray
    labels: np.ndarray | None
    sample: dict[str, np.ndarray]


def outputs_of(run: Runner, holdout: CalibrationSet) -> tuple[np.ndarray, np.ndarray | None]:
    """The first output over the held-out set, and the labels when it has them."""
    outs, labels = [], []
    for batch in holdout.batches():
        outs.append(np.asarray(run(batch.feeds)))
        if batch.labels is not None:
            labels.append(batch.labels)
    if not outs:
        raise ConversionError("the held-out set is empty")
    return np.concatenate(outs), (np.concatenate(labels) if labels else None)


def reference(run: Runner, holdout: CalibrationSet) -> Reference:
    """Run the fp32 model over the held-out set once."""
    outputs, labels = outputs_of(run, holdout)
    # batch 1 for latency, unless the model has a fixed batch size (then the set yields only full batches)
    sample = next(iter(holdout)) if holdout.drop_last else holdout.first().feeds
    return Reference(outputs, labels, sample)


def latency_ms(run: Runner, sample: Mapping[str, np.ndarray], *, runs: int = 20, warmup: int = 3) -> float:
    """Median wall time of ``run(sample)`` in milliseconds (batch of one), after ``warmup`` calls."""
    for _ in range(warmup):
        run(sample)
    times = []
    for _ in range(runs):
        start = time.perf_counter_ns()
        run(sample)
        times.append((time.perf_counter_ns() - start) / 1e6)
    return float(statistics.median(times))


def evaluate(run: Runner, holdout: CalibrationSet, ref: Reference, *, latency_runs: int = 20) -> Evaluation:
    """Compare ``run``'s outputs with the fp32 reference on the held-out set and time it."""
    outputs, _ = outputs_of(run, holdout)
    metrics = compare_int8(ref.outputs, outputs, ref.labels)
    return Evaluation(metrics, latency_ms(run, ref.sample, runs=latency_runs))
