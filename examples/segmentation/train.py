"""Fine-tune a torchvision segmenter on digits-on-photos and save a ``state_dict`` checkpoint.

    python examples/segmentation/train.py                     # LRASPP MobileNetV3-Large → runs/segmentation/lraspp.pt
    python examples/segmentation/train.py --model unet        # the example's small U-Net → runs/segmentation/unet.pt

The transfer-learning recipe, with every weight made here (nothing is downloaded):

1. **Backbone.** MobileNetV3-Large learns to tell the ten digits apart on single-digit crops of photos
   (classification: the "pretrained backbone" a user would normally download).
2. **New head.** Its features go into LRASPP (``torchvision:lraspp_mobilenet_v3_large``, ``weights=None``),
   whose segmentation head is trained alone on scenes while the backbone stays frozen.
3. **Unfreeze.** Everything trains together, at a lower learning rate.

Prints the held-out mIoU (background and the ten digits) and the time taken. The U-Net is trained from
scratch in one stage.
"""

from __future__ import annotations

import argparse
import time
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType

import numpy as np
import torch
import torch.nn.functional as F
import torchvision
from infership.calibration import import_file

HERE = Path(__file__).resolve().parent


def _sibling(name: str) -> ModuleType:
    """A module of this folder (examples/ is not a package)."""
    return import_file(HERE / f"{name}.py")


data = _sibling("data")
unet = _sibling("unet")
NUM_CLASSES = len(data.CLASS_NAMES)


@dataclass(frozen=True)
class Recipe:
    """Steps and sizes of the three stages (defaults: a few minutes on two CPU cores)."""

    backbone_steps: int = 300
    head_steps: int = 100
    finetune_steps: int = 800
    crop: int = 32  # side of the single-digit crops the backbone learns on
    train_scenes: int = 1200
    batch: int = 16
    seed: int = 0


def lraspp() -> torch.nn.Module:
    """The segmenter, built exactly as ``infership export torchvision:lraspp_mobilenet_v3_large`` builds it."""
    return torchvision.models.get_model(
        "lraspp_mobilenet_v3_large", weights=None, weights_backbone=None, num_classes=NUM_CLASSES
    )


def _digit_crops(recipe: Recipe) -> tuple[torch.Tensor, torch.Tensor]:
    """Single-digit training scenes at ``crop`` pixels and the digit each shows."""
    made = data.scenes.make_scenes(
        1500, size=recipe.crop, split="train", start=200_000, max_digits=1, digit_scale=(0.6, 0.85)
    )
    x = torch.from_numpy(np.stack([data.to_input(s.image, None) for s in made]))
    y = torch.as_tensor([int(s.labels[0]) - 1 for s in made])
    return x, y


def pretrain_backbone(recipe: Recipe) -> dict[str, torch.Tensor]:
    """Stage 1: MobileNetV3-Large (dilated, as LRASPP uses it) as a digit classifier; its ``features``."""
    net = _fast_batch_norm(torchvision.models.mobilenet_v3_large(weights=None, num_classes=10, dilated=True))
    x, y = _digit_crops(recipe)
    opt = torch.optim.AdamW(net.parameters(), lr=1e-3, weight_decay=1e-4)
    gen = torch.Generator().manual_seed(recipe.seed)
    net.train()
    for step in range(recipe.backbone_steps):
        idx = torch.randint(len(x), (64,), generator=gen)
        loss = F.cross_entropy(net(x[idx]), y[idx])
        opt.zero_grad()
        loss.backward()
        opt.step()
        if step % 50 == 0:
            print(f"  backbone step {step}: loss {loss.item():.3f}", flush=True)
    net.eval()
    with torch.no_grad():
        acc = (net(x[-300:]).argmax(dim=1) == y[-300:]).float().mean().item()
    print(f"  backbone: digit accuracy {100 * acc:.1f}% on the last 300 of its crops", flush=True)
    return {k.removeprefix("features."): v for k, v in net.state_dict().items() if k.startswith("features.")}


def _fast_batch_norm(model: torch.nn.Module) -> torch.nn.Module:
    """Batch-norm running statistics that follow a few hundred steps: torchvision's MobileNetV3 uses a
    momentum of 0.01, made for ImageNet-length training (the exported model is the same either way)."""
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.momentum = 0.1
    return model


def _scene_batches(recipe: Recipe) -> tuple[torch.Tensor, torch.Tensor]:
    images, masks = data.load_scenes("train", recipe.train_scenes)
    x = torch.from_numpy(np.stack([data.to_input(i, None) for i in images]))
    return x, torch.from_numpy(masks.astype(np.int64))


def _segment_steps(model, params, x, y, *, steps: int, lr: float, recipe: Recipe, what: str) -> None:
    # Digits cover about a tenth of the pixels: background counts less, so the digits are not ignored.
    weight = torch.ones(NUM_CLASSES)
    weight[0] = 0.2
    opt = torch.optim.AdamW(params, lr=lr, weight_decay=1e-4)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=max(steps, 1))
    gen = torch.Generator().manual_seed(recipe.seed + 1)
    for step in range(steps):
        idx = torch.randint(len(x), (recipe.batch,), generator=gen)
        xb, yb = x[idx], y[idx]
        if step % 2:  # mirrored scenes: handwriting is not symmetric, but strokes and photos are
            xb, yb = xb.flip(-1), yb.flip(-1)
        out = model(xb)
        out = out["out"] if isinstance(out, dict) else out
        loss = F.cross_entropy(out, yb, weight=weight, ignore_index=255)
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
        if step % 50 == 0:
            print(f"  {what} step {step}: loss {loss.item():.3f}", flush=True)


def miou(model: torch.nn.Module) -> float:
    """Held-out mean IoU in percent over the eleven classes (infership's segmentation judge)."""
    from infership.runtime import judge_for

    images, masks = data.load_scenes("holdout", data.HOLDOUT_SCENES)
    model.eval()
    outs = []
    with torch.no_grad():
        for i in range(0, len(images), 50):
            x = torch.from_numpy(np.stack([data.to_input(im, None) for im in images[i : i + 50]]))
            out = model(x)
            outs.append({"out": (out["out"] if isinstance(out, dict) else out).numpy()})
    return float(judge_for("segmentation").score(outs, masks.astype(np.int64)))


def train_lraspp(recipe: Recipe) -> torch.nn.Module:
    torch.manual_seed(recipe.seed)
    features = pretrain_backbone(recipe)
    model = _fast_batch_norm(lraspp())
    missing = model.backbone.load_state_dict(features, strict=False)
    assert not missing.missing_keys, missing.missing_keys  # every backbone layer comes from stage 1
    x, y = _scene_batches(recipe)
    model.train()
    for p in model.backbone.parameters():
        p.requires_grad_(False)
    model.backbone.eval()  # frozen: its batch-norm statistics stay those of stage 1
    _segment_steps(
        model,
        model.classifier.parameters(),
        x,
        y,
        steps=recipe.head_steps,
        lr=5e-3,
        recipe=recipe,
        what="head",
    )
    for p in model.backbone.parameters():
        p.requires_grad_(True)
    model.train()
    _segment_steps(
        model, model.parameters(), x, y, steps=recipe.finetune_steps, lr=1e-3, recipe=recipe, what="all"
    )
    return model.eval()


def train_unet(recipe: Recipe) -> torch.nn.Module:
    torch.manual_seed(recipe.seed)
    model = unet.build_unet(NUM_CLASSES)
    x, y = _scene_batches(recipe)
    model.train()
    _segment_steps(
        model, model.parameters(), x, y, steps=recipe.finetune_steps, lr=3e-3, recipe=recipe, what="unet"
    )
    return model.eval()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Fine-tune a segmenter on digits-on-photos (offline).")
    parser.add_argument("--model", choices=["lraspp", "unet"], default="lraspp")
    parser.add_argument("--out", type=Path, help="checkpoint (default runs/segmentation/<model>.pt)")
    parser.add_argument("--steps", type=int, default=Recipe.finetune_steps, help="fine-tuning steps")
    parser.add_argument(
        "--backbone-steps", type=int, default=Recipe.backbone_steps, help="backbone (digit classifier) steps"
    )
    parser.add_argument("--threads", type=int, default=2, help="torch threads (default 2)")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    out = args.out or HERE.parents[1] / "runs" / "segmentation" / f"{args.model}.pt"
    recipe = Recipe(finetune_steps=args.steps, backbone_steps=args.backbone_steps)
    start = time.perf_counter()
    model = train_lraspp(recipe) if args.model == "lraspp" else train_unet(recipe)
    out.parent.mkdir(parents=True, exist_ok=True)
    torch.save(model.state_dict(), out)
    print(f"saved {out} · held-out mIoU {miou(model):.2f}% · {time.perf_counter() - start:.0f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
