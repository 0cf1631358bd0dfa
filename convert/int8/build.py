"""One function per int8 target: build, validate, repair. Used by :func:`infership.convert.int8.quantize`.

Each returns the target's report and the files to add to the artifact (written in the scratch directory
``ctx.tmp``). Every candidate is judged through the runtime's backends (:mod:`.evaluate`).
"""

from __future__ import annotations

import logging
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

from infership.runtime.manifest import Step

from . import evaluate as ev
from .openvino import NncfQuantConfig, quantize_openvino
from .ort import OrtQuantConfig, calibrate, preprocess_model, quantizable_op_types, quantize_qdq
from .repair import openvino_quantizers, ort_quantizers, rank_layers, repair
from .smooth import smooth_for_dynamic_int8
from .torch import quantize_torch, trace_fp32
from .transformer import (
    DynamicMode,
    OrtDynamicConfig,
    choose_blockwise,
    compress_openvino_weights,
    dynamic_quantizers,
    quantize_dynamic_model,
)
from .types import Evaluation, LayerError, QuantizeContext, RepairResult, RepairStep, Target, TargetReport

log = logging.getLogger(__name__)

#: A built model: its files under ``ctx.tmp`` (the first is the one a runtime opens) and its step.
Built = tuple[list[Path], Step]


def _node_names(onnx_path: Path, op_types: set[str] | None = None) -> list[str]:
    import onnx

    graph = onnx.load(str(onnx_path), load_external_data=False).graph
    return [n.name for n in graph.node if op_types is None or n.op_type in op_types]


def _report(
    ctx: QuantizeContext,
    target: Target,
    steps: list[Step],
    result: RepairResult,
    excluded: tuple[str, ...],
    fp32_latency: float | None,
    backend: str,
) -> TargetReport:
    checked = ctx.budget is not None or len(result.steps) > 1
    if checked:
        steps.append(
            Step(
                "repair",
                params={"max_accuracy_drop": ctx.budget, "enabled": ctx.repair, "max_steps": ctx.max_steps},
                result=result.to_dict(),
            )
        )
    final = result.final
    return TargetReport(
        target=target,
        variant_id=target.variant_id,
        metrics=final.metrics,
        latency_ms=final.latency_ms,
        fp32_latency_ms=fp32_latency,
        passed=ctx.within_budget(final.metrics),
        backend=backend,
        repair=result if checked else None,
        excluded_nodes=excluded,
        steps=tuple(steps),
    )


def _fp32_latency(ctx: QuantizeContext, backend: str) -> float:
    """The artifact's fp32 ONNX variant timed on ``backend`` (the int8 variant's runtime)."""
    fp32 = ctx.ref.variant_id
    return ev.latency_ms(ctx, ctx.artifact, backend=backend, variant_id=fp32)


def _repaired(
    ctx: QuantizeContext,
    target: Target,
    requantize: Any,
    rank: Any,
    initial_exclusions: tuple[str, ...],
    initial: tuple[Built, Evaluation] | None = None,
) -> tuple[Built, RepairResult, str]:
    """Run the repair loop on ``target``'s candidates (from ``initial``, a model already built and evaluated,
    when given); the last model built, the record, the backend."""
    backends: list[str] = [initial[1].backend] if initial is not None else []

    def evaluate(model: Built) -> Evaluation:
        result = ev.evaluate(ctx, target, model[0])
        backends.append(result.backend)
        return result

    model, result = repair(
        requantize=requantize,
        evaluate=evaluate,
        rank=rank,
        budget=ctx.repair_budget,
        max_steps=ctx.max_steps,
        initial=None if initial is None else initial[0],
        initial_evaluation=None if initial is None else initial[1],
        initial_exclusions=initial_exclusions,
    )
    return model, result, backends[-1]


def build_ort(
    ctx: QuantizeContext, config: OrtQuantConfig, target: Target = Target.ORT
) -> tuple[TargetReport, list[Path]]:
    """ONNX Runtime: pre-process, calibrate once, quantize (QDQ), validate, repair by excluding nodes.
    ``target`` is :attr:`Target.ORT` or :attr:`Target.ORT_TENSOR` (the variant it becomes)."""
    pre = ctx.tmp / f"{target.value}-fp32-pre.onnx"
    steps = [preprocess_model(ctx.src, pre)]
    calib = ctx.calib.with_progress("calibrating (ONNX Runtime)" if ctx.progress else None)
    cal = calibrate(pre, calib, config, workdir=ctx.tmp)
    steps.append(cal.step(ctx.calib))
    quantizable = set(_node_names(pre, set(quantizable_op_types(config))))
    made: list[Built] = []

    def requantize(excluded: tuple[str, ...]) -> Built:
        path = ctx.tmp / f"{target.variant_id}-{len(made)}.onnx"
        made.append(([path], quantize_qdq(pre, path, cal, config.excluding(nodes=excluded))))
        return made[-1]

    def rank(model: Built) -> Any:
        return rank_layers(
            pre, ort_quantizers(model[0][0]), ctx.rank_set, quantizable_nodes=quantizable.__contains__
        )

    (files, qstep), result, backend = _repaired(ctx, target, requantize, rank, config.exclude_nodes)
    steps.append(qstep)
    excluded = tuple(qstep.params["exclude_nodes"])
    fp32_latency = _fp32_latency(ctx, backend)
    return _report(ctx, target, steps, result, excluded, fp32_latency, backend), files


#: SmoothQuant strengths ``quantize`` tries, in order, for a transformer whose OpenVINO int8 misses its budget
#: at NNCF's default (0.95), before keeping any layer in float. Which one wins depends on the model and on the
#: sentences judged: on all-MiniLM-L6-v2 (benchmarks/text_encoder.py) one set of 320 sentences had 0.7 meet a
#: 2.5-point budget with every layer in int8, another had 0.8 lose least (4.7 points; 0.95 6.6, 0.7 8.1).
SMOOTH_QUANT_ALPHAS = (0.8, 0.7, 0.6, 0.5)


def build_openvino(
    ctx: QuantizeContext, config: NncfQuantConfig, target: Target = Target.OPENVINO
) -> tuple[TargetReport, list[Path]]:
    """OpenVINO: NNCF from the fp32 ONNX model, validate, repair through NNCF's ignored scope. For a
    transformer with a budget and no strength given, SmoothQuant's strength is chosen first
    (:data:`SMOOTH_QUANT_ALPHAS`): the first that meets the budget, else the one that loses least, from which
    the repair goes on. ``target`` is :attr:`Target.OPENVINO` or :attr:`Target.OPENVINO_IR` (the variant it
    becomes; ``config.graph`` says which graph NNCF quantizes)."""
    import openvino as ov

    onnx_nodes = _node_names(ctx.src)
    made: list[Built] = []

    def build(cfg: NncfQuantConfig) -> Built:
        xml = ctx.tmp / f"{target.variant_id}-{len(made)}" / "model.xml"
        step = quantize_openvino(ctx.src, ctx.calib, cfg, xml, show_progress=ctx.progress)
        made.append(([xml, xml.with_suffix(".bin")], step))
        return made[-1]

    def rank(model: Built) -> Any:
        quantizers = openvino_quantizers(ov.Core().read_model(str(model[0][0])), onnx_nodes)
        return rank_layers(ctx.src, quantizers, ctx.rank_set)

    steps: list[Step] = []
    initial = None
    if config.transformer and config.smooth_quant_alpha is None and ctx.budget is not None:
        alpha, initial, step = _smooth_quant_strength(ctx, config, build, target)
        config = replace(config, smooth_quant_alpha=alpha)
        steps.append(step)

    def requantize(excluded: tuple[str, ...]) -> Built:
        return build(config.excluding(nodes=excluded))

    (files, qstep), result, backend = _repaired(ctx, target, requantize, rank, config.ignored_nodes, initial)
    excluded = tuple(qstep.params["ignored_nodes"])
    fp32_latency = _fp32_latency(ctx, backend)
    return _report(ctx, target, [*steps, qstep], result, excluded, fp32_latency, backend), files


def _smooth_quant_strength(
    ctx: QuantizeContext, config: NncfQuantConfig, build: Any, target: Target
) -> tuple[float | None, tuple[Built, Evaluation] | None, Step]:
    """Try NNCF's default strength, then :data:`SMOOTH_QUANT_ALPHAS`, until one meets the budget (``build``
    makes the model of a config): the strength kept (the first within budget, else the one that lost least),
    its model and evaluation (for the repair to start from), and the step recording every strength tried."""
    tried: list[dict[str, Any]] = []
    best: tuple[float, float | None, Built, Evaluation] | None = None
    start = time.perf_counter()
    for alpha in (None, *SMOOTH_QUANT_ALPHAS):
        model = build(replace(config, smooth_quant_alpha=alpha))
        result = ev.evaluate(ctx, target, model[0])
        loss = result.metrics.loss_points
        tried.append({"alpha": alpha, "loss_points": None if loss is None else round(loss, 4)})
        if loss is None:
            break  # nothing to compare with the budget: the repair says so
        if best is None or loss < best[0]:
            best = (loss, alpha, model, result)
        if ctx.within_budget(result.metrics):
            break
    alpha, initial = (None, None) if best is None else (best[1], (best[2], best[3]))
    step = Step(
        "smooth_quant_alpha",
        params={"tried_in_order": [None, *SMOOTH_QUANT_ALPHAS]},
        result={"tried": tried, "chosen": {"alpha": alpha, "default": "NNCF's (0.95)"}},
        seconds=round(time.perf_counter() - start, 3),
    )
    return alpha, initial, step


def build_torch(ctx: QuantizeContext, torch_model: Any) -> tuple[TargetReport, list[Path]]:
    """PyTorch FX int8 → TorchScript, validated like the others (no repair: it has no ONNX node names).

    The fp32 latency is the artifact's fp32 torch variant on the ``torch`` backend; an artifact without one
    gets the fp32 model traced to TorchScript the way the int8 one is, so both run the same way.
    """
    import torch

    from ..source import load_model_source

    module = torch_model
    steps: list[Step] = []
    if not isinstance(module, torch.nn.Module):
        loaded = load_model_source(module)
        module = loaded.model
        if loaded.step is not None:
            steps.append(loaded.step)
    inputs = ctx.artifact.manifest.inputs
    path = ctx.tmp / f"{Target.TORCH.variant_id}.torchscript"
    steps.append(quantize_torch(module, ctx.calib, inputs, path))
    result = ev.evaluate(ctx, Target.TORCH, [path])
    fp32 = ctx.artifact.manifest.find(formats=("torch-export", "torchscript"), precision="fp32")
    if fp32 is not None:
        fp32_latency = ev.latency_ms(ctx, ctx.artifact, backend=result.backend, variant_id=fp32.id)
    else:
        traced = ctx.tmp / "torch-fp32.torchscript"
        trace_fp32(module, ctx.calib, inputs, traced)
        art = ev.candidate(ctx, [traced], variant_id="torch-fp32", format="torchscript", precision="fp32")
        fp32_latency = ev.latency_ms(ctx, art, backend=result.backend, variant_id="torch-fp32")
    stopped = "no budget given" if ctx.budget is None else "repair is not available for torch int8"
    record = RepairResult(
        (RepairStep(0, (), None, None, result.metrics, result.latency_ms),),
        (),
        ctx.within_budget(result.metrics),
        (),
        stopped,
    )
    return _report(ctx, Target.TORCH, steps, record, (), fp32_latency, result.backend), [path]


def _unrepaired(ctx: QuantizeContext, result: Evaluation, why: str) -> RepairResult:
    stopped = "no budget given" if ctx.budget is None else why
    step = RepairStep(0, (), None, None, result.metrics, result.latency_ms)
    return RepairResult((step,), (), ctx.within_budget(result.metrics), (), stopped)


def _fused_graph(ctx: QuantizeContext) -> tuple[Path, list[Step], str]:
    """The graph dynamic int8 starts from, the steps that made it, and the fp32 variant to time it against:
    the artifact's fused graph; else the fusions made now (for a text model whose architecture the manifest
    records); else the plain graph."""
    from ..optimize import fused_ok, optimize_transformer
    from ..variants import FUSED_ID

    m = ctx.artifact.manifest
    fused = next((v for v in m.variants if v.id == FUSED_ID), None)
    if fused is not None:
        ctx.artifact.verify(fused)
        return ctx.artifact.path_of(fused.files[0]), [], fused.id
    arch = (m.extra.get("text") or {}).get("architecture")
    if arch:
        dst = ctx.tmp / "fused-fp32.onnx"
        step = optimize_transformer(ctx.src, dst, architecture=arch)
        if fused_ok(step):
            return dst, [step], ctx.ref.variant_id
    return ctx.src, [], ctx.ref.variant_id


def build_ort_dynamic(ctx: QuantizeContext, config: OrtDynamicConfig) -> tuple[TargetReport, list[Path]]:
    """ONNX Runtime dynamic int8 on the fused graph (no calibration), validated, and repaired by keeping the
    nodes whose activations the dynamic quantizer hurts most in float. In ``mixed`` mode the repair first
    moves the MatMuls quantized per tensor to per-block int8, worst input first (still int8, a small cost),
    and keeps nodes in float only after that."""
    src, steps, fp32_id = _fused_graph(ctx)
    if config.smooth and config.mode is not DynamicMode.BLOCKWISE:
        smoothed = ctx.tmp / "smoothed-fp32.onnx"
        steps.append(
            smooth_for_dynamic_int8(
                src, smoothed, ctx.calib, attention=config.attention, exclude_nodes=config.exclude_nodes
            )
        )
        src = smoothed
    upgradable: list[LayerError] = []
    if config.mode is DynamicMode.MIXED and not config.blockwise_nodes:
        config, chosen, upgradable = choose_blockwise(src, config, ctx.rank_set)
        steps.append(chosen)
    upgrades = {e.nodes[0] for e in upgradable}
    made: list[Built] = []

    def split(excluded: tuple[str, ...]) -> OrtDynamicConfig:
        to_block = tuple(n for n in excluded if n in upgrades)
        to_float = tuple(n for n in excluded if n not in upgrades)
        changed = config.excluding(nodes=to_float)
        if to_block:
            changed = replace(changed, blockwise_nodes=changed.blockwise_nodes + to_block)
        return changed

    def requantize(excluded: tuple[str, ...]) -> Built:
        path = ctx.tmp / f"{Target.ORT_DYNAMIC.value}-{len(made)}.onnx"
        made.append(([path], quantize_dynamic_model(src, path, split(excluded))))
        return made[-1]

    def rank(model: Built) -> Any:
        # mixed: per-block int8 for the per-tensor MatMuls first; float only once every MatMul is per block
        blockwise = split(tuple(upgrades)) if upgrades else config
        return upgradable + rank_layers(src, dynamic_quantizers(src, blockwise), ctx.rank_set)

    (files, qstep), result, backend = _repaired(
        ctx, Target.ORT_DYNAMIC, requantize, rank, config.exclude_nodes
    )
    if upgrades:
        moved = tuple(n for n in result.excluded if n in upgrades)
        marked = tuple(
            replace(s, action="blockwise") if s.excluded and set(s.excluded) <= upgrades else s
            for s in result.steps
        )
        excluded_float = tuple(n for n in result.excluded if n not in upgrades)
        result = replace(result, steps=marked, excluded=excluded_float, blockwise=moved)
    steps.append(qstep)
    excluded = tuple(qstep.params["exclude_nodes"])
    fp32_latency = ev.latency_ms(ctx, ctx.artifact, backend=backend, variant_id=fp32_id)
    return _report(ctx, Target.ORT_DYNAMIC, steps, result, excluded, fp32_latency, backend), files


def build_openvino_weights(ctx: QuantizeContext) -> tuple[TargetReport, list[Path]]:
    """OpenVINO with NNCF-compressed int8 weights (no calibration), validated like the others."""
    xml = ctx.tmp / Target.OPENVINO_WEIGHTS.value / "model.xml"
    step = compress_openvino_weights(ctx.src, xml)
    files = [xml, xml.with_suffix(".bin")]
    result = ev.evaluate(ctx, Target.OPENVINO_WEIGHTS, files)
    fp32_latency = _fp32_latency(ctx, result.backend)
    record = _unrepaired(ctx, result, "repair is not available for weight-only int8")
    return _report(ctx, Target.OPENVINO_WEIGHTS, [step], record, (), fp32_latency, result.backend), files
