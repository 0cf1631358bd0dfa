"""What static int8 costs a sentence encoder's nearest neighbours, and what keeping layers in float costs in time.

Static int8 — one activation range per tensor, fixed at calibration — is the fastest int8 recipe for
transformer encoders on a CPU with int8 matrix instructions (OpenVINO with NNCF's ``model_type=TRANSFORMER``:
SmoothQuant, then fast bias correction). It is also the one that loses nearest neighbours. This script
measures, in one process and interleaved, how far the usual repair — keeping the layers whose activations have
outlier channels in float — moves it: NNCF's int8 as its documentation shows it; the same with the six
feed-forward output MatMuls in float (their input, the GELU output, holds the outlier channels); and with the
six attention output MatMuls in float too. The OpenVINO fp32 model and infership's default int8
(``Predictor.load(ART, precision="int8")``) are measured beside them.

Accuracy: mean cosine and nearest-neighbour agreement against torch fp32 on the 320 held-out sentences and on
the 320 validation sentences of ``benchmarks/text_encoder.py`` (the same sets, the same calibration
sentences). Latency: block medians at 8 tokens batch 1, 128 tokens batch 1 and batch 32 × 70 tokens, paths in
rotating order every round; each path's time over NNCF's default int8, paired by round.

    .venv/bin/python benchmarks/text_static_int8.py [--rounds 5] [--workdir runs/bench/text_encoder]

Uses the artifact ``benchmarks/text_encoder.py`` builds (built here first if it is missing). Writes
``<workdir>/text_static_int8.json`` and prints Markdown tables.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))

import text_encoder as te  # noqa: E402

NNCF = "NNCF int8 (TRANSFORMER)"
LAYER = "/encoder/encoder/layer.{}/"


def float_groups(layers: int) -> dict[str, list[str]]:
    """Node groups kept in float, by the exporter's node names."""
    ffn_out = [LAYER.format(i) + "output/dense/MatMul" for i in range(layers)]
    attn_out = [LAYER.format(i) + "attention/output/dense/MatMul" for i in range(layers)]
    return {
        NNCF: [],
        "NNCF int8, FFN output MatMuls in float": ffn_out,
        "NNCF int8, FFN and attention output MatMuls in float": ffn_out + attn_out,
    }


def nncf_paths(plain: Path, calib_feeds: list[dict], layers: int) -> dict[str, Callable[[dict], np.ndarray]]:
    import nncf
    import openvino as ov

    core = ov.Core()
    out: dict[str, Callable[[dict], np.ndarray]] = {"OpenVINO fp32": te.ov_path(core.read_model(str(plain)))}
    for name, nodes in float_groups(layers).items():
        scope = nncf.IgnoredScope(names=nodes, validate=True) if nodes else None
        model = nncf.quantize(
            core.read_model(str(plain)),
            nncf.Dataset(calib_feeds),
            model_type=nncf.ModelType.TRANSFORMER,
            subset_size=len(calib_feeds),
            **({"ignored_scope": scope} if scope else {}),
        )
        out[name] = te.ov_path(model)
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=5, help="rounds of interleaved blocks, odd (default 5)")
    ap.add_argument("--workdir", type=Path, default=ROOT / "runs" / "bench" / "text_encoder")
    args = ap.parse_args(argv)
    if args.rounds < 1 or args.rounds % 2 == 0:
        # The time over NNCF's int8 is the inverse of latency()'s median of per-round ratios, which is the
        # median of the inverses only for an odd number of rounds.
        ap.error(f"--rounds must be an odd number of at least 1, got {args.rounds}")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    logging.basicConfig(level=logging.WARNING)
    logging.getLogger("nncf").setLevel(logging.ERROR)
    load_before = te.load_average()

    from infership.runtime import Artifact
    from infership.runtime.text import TextEncoder

    calib, valid, held = te.sentences()
    art = te.build(args.workdir, calib, valid, rebuild=False)
    manifest = Artifact.load(art).manifest
    encoder = TextEncoder(manifest.tokenizer, art)
    layers = int(json.loads((te.model_folder() / "config.json").read_text())["num_hidden_layers"])
    torch_fn = te.torch_path()
    sets = {"held-out": te.sentence_batches(encoder, held), "validation": te.sentence_batches(encoder, valid)}
    refs = {k: [torch_fn(b) for b in v] for k, v in sets.items()}

    paths = nncf_paths(art / "model.onnx", [encoder.encode([t]) for t in calib], layers)
    mine, _ = te.infership_paths(art)
    paths[te.MINE] = mine[te.MINE]
    acc = {k: te.accuracy(paths, sets[k], refs[k]) for k in sets}
    te.MINE = NNCF  # latency() pairs every path with this one
    lat, paired = te.latency(paths, encoder, args.rounds)
    # paired[s][n] is NNCF's time over n's (median over rounds); its inverse is n's over NNCF's.
    over_nncf = {s: {n: round(1.0 / r, 3) for n, r in row.items()} for s, row in paired.items()}
    result = {
        "threads": te.THREADS,
        "rounds": args.rounds,
        "float_groups": float_groups(layers),
        "accuracy_vs_torch_fp32": {
            k: {n: {m: v for m, v in a.items() if m != "nn_gaps"} for n, a in acc[k].items()} for k in acc
        },
        "latency_ms": lat,
        "time_over_nncf_int8_paired": over_nncf,
    }
    te.save_result(args.workdir, "text_static_int8.json", result, load_before)
    shapes = list(te.SHAPES)
    print("\n| path | held-out cos / NN | validation cos / NN | " + " | ".join(shapes) + " |")
    print("|---|---|---|" + "---|" * len(shapes))
    for n in paths:
        h, v = acc["held-out"][n], acc["validation"][n]
        cells = " | ".join(
            f"{lat[n][s]:.2f}" + ("" if n == NNCF else f" ({over_nncf[s][n]:.2f}×)") for s in shapes
        )
        print(
            f"| {n} | {h['cos_mean']:.4f} / {h['nn']:.3f} | {v['cos_mean']:.4f} / {v['nn']:.3f} | {cells} |"
        )
    print(
        f"\nms; in brackets each path's time over {NNCF}'s, paired by round (median of {args.rounds} rounds)"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
