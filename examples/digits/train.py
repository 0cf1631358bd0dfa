"""Fine-tune the digits CNN and save a ``state_dict`` checkpoint, the way training code usually does.

    python examples/digits/train.py --out digits.pt

Prints the test accuracy. The train/test split is the example's fixed split (``data.py``), so calibration
(``data.py:train``) and validation (``data.py:test``) in ``pipeline.toml`` use the same held-out images.
"""

from __future__ import annotations

import argparse
import importlib.util
import sys
import time
from pathlib import Path
from types import ModuleType

import torch
from infership.calibration import load_callable


def load_model_module() -> ModuleType:
    """The sibling ``model.py``, loaded by path under a unique name (examples/ is not a package)."""
    name = "infership_example_digits_model"
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, Path(__file__).resolve().parent / "model.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


digits_model = load_model_module()
load_digits_split = load_callable(f"{Path(__file__).resolve().parent / 'data.py'}:load_split")


def train(out: Path, recipe=None) -> tuple[Path, float]:
    """Pretrain, fine-tune, save ``torch.save(model.state_dict(), out)``; returns the path and test accuracy."""
    recipe = recipe or digits_model.Recipe()
    x_train, y_train = load_digits_split("train")
    x_test, y_test = load_digits_split("test")
    backbone = digits_model.pretrain_backbone(x_train, y_train, recipe)
    model = digits_model.finetune(x_train, y_train, backbone, recipe)
    out.parent.mkdir(parents=True, exist_ok=True)
    torch.save(model.state_dict(), out)
    return out, digits_model.accuracy(model, x_test, y_test)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Fine-tune the digits CNN and save a state_dict checkpoint.")
    parser.add_argument(
        "--out", type=Path, default=Path("digits.pt"), help="checkpoint path (default digits.pt)"
    )
    parser.add_argument("--epochs", type=int, default=15, help="fine-tuning epochs (default 15)")
    args = parser.parse_args(argv)
    start = time.perf_counter()
    path, acc = train(args.out, digits_model.Recipe(finetune_epochs=args.epochs))
    print(f"saved {path} · test accuracy {acc:.2f}% · {time.perf_counter() - start:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
