"""One function per int8 target: build, validate, repair. Used by :func:`infership.convert.quantize.quantize`.

Each returns the target's report and the files to add to the artifact (written in a scratch directory).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any

from infership.runtime.manifest import Step

from . import evaluate as qe
from .openvino import NncfQuantConfig, quantize_openvino
from .ort import OrtQuantConfig, calibrate, preprocess_model, quantizable_op_types, quantize_qdq
from .repair import RepairResult, openvino_quantizers, ort_quantizers, rank_layers
from .repair import repair as run_repair

if TYPE_CHECKING:
    from .workflow import QuantizeReport, TargetReport, _Context

log = logging.getLogger(__name__)


def _node_names(onnx_path: Path, op_types: set[str] | None = None) -> list[str]:
    import onnx

    graph = onnx.load(str(onnx_path), load_external_data=False).graph
    return [n.name for n in graph.node if op_types is None or n.op_type in op_types]


def _report(
    ctx: _Context,
    target: Any,
    steps: list[Step],
    result: RepairResult,
    excluded: tuple[str, ...],
    fp32_latency: float | None,
) -> TargetReport:
    from .workflow import VARIANT_IDS, TargetReport

    final = result.final
    passed = ctx.budget is None or (final.metrics.drop is not None and final.metrics.drop <= ctx.budget)
    if ctx.budget is not None or len(result.steps) > 1:
        steps.append(
            Step(
                "repair",
                params={"max_accuracy_drop": ctx.budget, "enabled": ctx.repair, "max_steps": ctx.max_steps},
                result=result.to_dict(),
            )
        )
    return TargetReport(
        target=target,
        variant_id=VARIANT_IDS[target],
        metrics=final.metrics,
        latency_ms=final.latency_ms,
        fp32_latency_ms=fp32_latency,
        passed=passed,
        repair=result if (ctx.budget is not None or len(result.steps) > 1) else None,
        excluded_nodes=excluded,
        steps=tuple(steps),
    )


def _budget(ctx: _Context) -> float | None:
    return ctx.budget if ctx.repair else None


def build_ort(ctx: _Context, config: OrtQuantConfig) -> tuple[TargetReport, list[Path]]:
    """ONNX Runtime: pre-process, calibrate once, quantize (QDQ), validate, repair by excluding nodes."""
    from .workflow import Target

    pre = ctx.tmp / "ort-fp32-pre.onnx"
    steps = [preprocess_model(ctx.src, pre)]
    calib = ctx.calib.with_progress("calibrating (ONNX Runtime)" if ctx.progress else None)
    cal = calibrate(pre, calib, config, workdir=ctx.tmp)
    steps.append(cal.step(ctx.calib))
    quantizable = set(_node_names(pre, set(quantizable_op_types(config))))
    made: list[tuple[Path, Step]] = []

    def requantize(excluded: tuple[str, ...]) -> tuple[Path, Step]:
        path = ctx.tmp / f"ort-int8-{len(made)}.onnx"
        made.append((path, quantize_qdq(pre, path, cal, config.excluding(nodes=excluded))))
        return made[-1]

    def evaluate(model: tuple[Path, Step]) -> Any:
        return qe.evaluate(qe.ort_runner(model[0]), ctx.holdout, ctx.ref, latency_runs=ctx.latency_runs)

    def rank(model: tuple[Path, Step]) -> Any:
        return rank_layers(
            pre, ort_quantizers(model[0]), ctx.rank_set, quantizable_nodes=quantizable.__contains__
        )

    (path, qstep), result = run_repair(
        requantize=requantize,
        evaluate=evaluate,
        rank=rank,
        budget=_budget(ctx),
        max_steps=ctx.max_steps,
        initial_exclusions=config.exclude_nodes,
    )
    steps.append(qstep)
    fp32_latency = qe.latency_ms(qe.ort_runner(ctx.src), ctx.ref.sample, runs=ctx.latency_runs)
    excluded = tuple(qstep.params["exclude_nodes"])
    return _report(ctx, Target.ORT, steps, result, excluded, fp32_latency), [path]


def build_openvino(ctx: _Context, config: NncfQuantConfig) -> tuple[TargetReport, list[Path]]:
    """OpenVINO: NNCF from the fp32 ONNX model, validate, repair through NNCF's ignored scope."""
    import openvino as ov

    from .workflow import Target

    onnx_nodes = _node_names(ctx.src)
    made: list[tuple[Path, Step]] = []

    def requantize(excluded: tuple[str, ...]) -> tuple[Path, Step]:
        xml = ctx.tmp / f"ov-int8-{len(made)}" / "model.xml"
        made.append(
            (
                xml,
                quantize_openvino(
                    ctx.src, ctx.calib, config.excluding(nodes=excluded), xml, show_progress=ctx.progress
                ),
            )
        )
        return made[-1]

    def evaluate(model: tuple[Path, Step]) -> Any:
        return qe.evaluate(qe.openvino_runner(model[0]), ctx.holdout, ctx.ref, latency_runs=ctx.latency_runs)

    def rank(model: tuple[Path, Step]) -> Any:
        quantizers = openvino_quantizers(ov.Core().read_model(str(model[0])), onnx_nodes)
        return rank_layers(ctx.src, quantizers, ctx.rank_set)

    (xml, qstep), result = run_repair(
        requantize=requantize,
        evaluate=evaluate,
        rank=rank,
        budget=_budget(ctx),
        max_steps=ctx.max_steps,
        initial_exclusions=config.ignored_nodes,
    )
    fp32_latency = qe.latency_ms(qe.openvino_runner(ctx.src), ctx.ref.sample, runs=ctx.latency_runs)
    excluded = tuple(qstep.params["ignored_nodes"])
    report = _report(ctx, Target.OPENVINO, [qstep], result, excluded, fp32_latency)
    return report, [xml, xml.with_suffix(".bin")]


def build_torch(ctx: _Context, torch_model: Any) -> tuple[TargetReport, list[Path]]:
    """PyTorch FX int8 → TorchScript, validated like the others (no repair: it has no ONNX node names)."""
    import torch

    from .repair import Evaluation, RepairStep
    from .torch import quantize_torch
    from .workflow import Target

    module = torch_model
    steps: list[Step] = []
    if not isinstance(module, torch.nn.Module):
        from ..source import load_model_source

        loaded = load_model_source(module)
        module = loaded.model
        if loaded.step is not None:
            steps.append(loaded.step)
    inputs = ctx.artifact.manifest.inputs
    path = ctx.tmp / "torch-int8.torchscript"
    steps.append(quantize_torch(module, ctx.calib, inputs, path))
    names = tuple(s.name for s in inputs)
    ev: Evaluation = qe.evaluate(
        qe.torch_runner(torch.jit.load(str(path)), names), ctx.holdout, ctx.ref, latency_runs=ctx.latency_runs
    )
    fp32_latency = qe.latency_ms(qe.torch_runner(module.eval(), names), ctx.ref.sample, runs=ctx.latency_runs)
    stopped = "no budget given" if ctx.budget is None else "repair is not available for torch int8"
    within = ctx.budget is None or (ev.metrics.drop is not None and ev.metrics.drop <= ctx.budget)
    result = RepairResult(
        (RepairStep(0, (), None, None, ev.metrics, ev.latency_ms),), (), within, (), stopped
    )
    return _report(ctx, Target.TORCH, steps, result, (), fp32_latency), [path]


def variant_fields(rep: TargetReport, report: QuantizeReport) -> dict[str, Any]:
    """The manifest fields of a target's variant (everything but its id and files)."""
    from .workflow import Target

    fmt = {Target.ORT: "onnx", Target.OPENVINO: "openvino", Target.TORCH: "torchscript"}[rep.target]
    backend = {Target.ORT: None, Target.OPENVINO: "openvino", Target.TORCH: "torch"}[rep.target]
    if rep.target is Target.ORT:
        backend = next((s.params.get("target") for s in rep.steps if s.name == "quantize_static"), "ort-cpu")
    m = rep.metrics
    validation = {
        **m.to_dict(),
        "reference": "onnx-fp32 on ONNX Runtime",
        "accuracy": m.accuracy_int8,
        "drop": m.drop,
        "passed": rep.passed,
        "max_accuracy_drop": report.max_accuracy_drop,
        "latency_ms": round(rep.latency_ms, 4),
        "fp32_latency_ms": None if rep.fp32_latency_ms is None else round(rep.fp32_latency_ms, 4),
        "excluded_nodes": list(rep.excluded_nodes),
        "holdout": report.holdout,
        "int8_outlook": report.outlook.to_dict(),
    }
    return {
        "format": fmt,
        "precision": "int8",
        "steps": list(rep.steps),
        "validation": {k: v for k, v in validation.items() if v is not None},
        "calibration": report.calibration,
        "target": backend,
    }
