"""Fine-tune a torchvision Faster R-CNN (MobileNetV3-Large FPN) to find handwritten digits on photos.

Transfer learning the usual way, offline and in a few minutes on two CPU cores:

1. **Backbone.** No pretrained weights can be downloaded here, so the MobileNetV3-Large backbone is first
   trained briefly as a classifier of digit crops (and background crops) cut from training scenes — the
   stand-in for an ImageNet-pretrained backbone.
2. **Head.** The detector is built with that backbone (``weights=None, weights_backbone=None``: nothing is
   downloaded), the backbone frozen, and the new parts (FPN, region proposals, box head) trained.
3. **Unfreeze.** Everything is trained together for a while at a lower learning rate.

Writes ``runs/detection/detector.pt`` (a state_dict) for ``pipeline.toml``; ``model.py:build_model``
rebuilds the architecture. Usage::

    python examples/detection/train.py            # about 15 minutes on 2 cores (--minutes: the budget)
    python examples/detection/train.py --quick    # a smoke run (seconds; useless accuracy)
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import torch
from infership.calibration import import_file

HERE = Path(__file__).resolve().parent
OUT = HERE.parents[1] / "runs" / "detection" / "detector.pt"


data = import_file(HERE / "data.py")  # examples/ is not a package
model_py = import_file(HERE / "model.py")


def crops(images: np.ndarray, targets: list[dict], rng: np.random.Generator, side: int = 64):
    """Digit crops (label digit + 1) and background crops (label 0), resized to ``side``."""
    from PIL import Image

    xs, ys = [], []
    height, width = images.shape[1:3]
    for image, target in zip(images, targets, strict=True):
        for box, label in zip(target["boxes"], target["labels"], strict=True):
            x1, y1, x2, y2 = box
            pad = 0.15 * max(x2 - x1, y2 - y1)
            x1, y1 = int(max(0, x1 - pad)), int(max(0, y1 - pad))
            x2, y2 = int(min(width, x2 + pad)), int(min(height, y2 + pad))
            xs.append(np.asarray(Image.fromarray(image[y1:y2, x1:x2]).resize((side, side))))
            ys.append(int(label))
        s = int(rng.integers(24, 64))
        x0, y0 = int(rng.integers(0, width - s)), int(rng.integers(0, height - s))
        xs.append(np.asarray(Image.fromarray(image[y0 : y0 + s, x0 : x0 + s]).resize((side, side))))
        ys.append(0)  # may clip a digit: background crops are noisy, as in real life
    x = torch.from_numpy(np.stack(xs).transpose(0, 3, 1, 2).astype(np.float32) / 255.0)
    return x, torch.tensor(ys)


def pretrain_backbone(images, targets, *, epochs: int, seed: int) -> dict[str, torch.Tensor]:
    """Train MobileNetV3-Large as an 11-way crop classifier; return its ``features`` weights."""
    from torchvision.models import mobilenet_v3_large

    rng = np.random.default_rng(seed)
    x, y = crops(images, targets, rng)
    net = mobilenet_v3_large(weights=None, num_classes=11)
    opt = torch.optim.AdamW(net.parameters(), lr=2e-3, weight_decay=1e-4)
    net.train()
    for epoch in range(epochs):
        order = torch.randperm(len(x), generator=torch.Generator().manual_seed(seed + epoch))
        correct = 0
        for i in range(0, len(x), 32):
            idx = order[i : i + 32]
            logits = net(x[idx])
            loss = torch.nn.functional.cross_entropy(logits, y[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
            correct += int((logits.detach().max(1).indices == y[idx]).sum())
        print(
            f"backbone epoch {epoch + 1}/{epochs}: train accuracy {100 * correct / len(x):.1f}% ({len(x)} crops)"
        )
    return {k.removeprefix("features."): v for k, v in net.state_dict().items() if k.startswith("features.")}


def train_detector(
    model, images, targets, *, steps: int, seconds: float, lr: float, batch: int, seed: int, what: str
) -> None:
    """SGD for ``steps`` steps or ``seconds``, whichever ends first; warm-up then cosine decay over the
    budget (by elapsed share), so a slow or busy machine trains fewer steps on the same schedule."""
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.SGD(params, lr=lr, momentum=0.9, weight_decay=1e-4)
    rng = np.random.default_rng(seed)
    model.train()
    t0 = time.perf_counter()
    for step in range(steps):
        done = max(step / steps, (time.perf_counter() - t0) / seconds)
        if done >= 1.0:
            break
        for group in opt.param_groups:
            group["lr"] = lr * min(1.0, done / 0.05) * 0.5 * (1.0 + np.cos(np.pi * done))
        idx = rng.choice(len(images), size=batch, replace=False)
        x = [torch.from_numpy(images[i].transpose(2, 0, 1).astype(np.float32) / 255.0) for i in idx]
        t = [
            {"boxes": torch.from_numpy(targets[i]["boxes"]), "labels": torch.from_numpy(targets[i]["labels"])}
            for i in idx
        ]
        losses = model(x, t)
        loss = sum(losses.values())
        opt.zero_grad()
        loss.backward()
        opt.step()
        if step % 50 == 0:
            parts = " ".join(f"{k.removeprefix('loss_')} {float(v.detach()):.3f}" for k, v in losses.items())
            print(
                f"{what} step {step + 1}/{steps}: loss {float(loss):.3f} ({parts}) {time.perf_counter() - t0:.0f}s"
            )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a smoke run: a few steps of each stage")
    parser.add_argument("--scenes", type=int, default=800, help="training scenes")
    parser.add_argument("--head-steps", type=int, default=2000)
    parser.add_argument("--full-steps", type=int, default=4000)
    parser.add_argument("--minutes", type=float, default=12.0, help="time for the detector stages")
    parser.add_argument("--output", type=Path, default=OUT)
    parser.add_argument("--resume", type=Path, help="continue training this checkpoint (all layers)")
    args = parser.parse_args(argv)
    torch.manual_seed(0)
    torch.set_num_threads(2)
    if args.quick:
        args.scenes, args.head_steps, args.full_steps, args.minutes = 16, 2, 2, 1.0
    t0 = time.perf_counter()
    images, targets = data.load_scenes("train", args.scenes)
    print(f"{len(images)} training scenes, {sum(len(t['labels']) for t in targets)} digits")

    if args.resume is not None:
        model = model_py.build_model()
        model.load_state_dict(torch.load(args.resume))
        train_detector(
            model,
            images,
            targets,
            steps=args.full_steps,
            seconds=60 * args.minutes,
            lr=0.01,
            batch=4,
            seed=3,
            what="more",
        )
        model.eval()
        torch.save(model.state_dict(), args.output)
        print(f"wrote {args.output} in {time.perf_counter() - t0:.0f}s")
        return
    backbone = pretrain_backbone(images, targets, epochs=1 if args.quick else 5, seed=0)
    model = model_py.build_model()
    model.backbone.body.load_state_dict(backbone)
    for p in model.backbone.body.parameters():
        p.requires_grad_(False)
    head_s, full_s = 60 * args.minutes * 0.35, 60 * args.minutes * 0.65
    train_detector(
        model, images, targets, steps=args.head_steps, seconds=head_s, lr=0.02, batch=4, seed=1, what="head"
    )
    for p in model.parameters():
        p.requires_grad_(True)
    train_detector(
        model, images, targets, steps=args.full_steps, seconds=full_s, lr=0.01, batch=4, seed=2, what="all"
    )

    model.eval()
    args.output.parent.mkdir(parents=True, exist_ok=True)
    torch.save(model.state_dict(), args.output)
    print(f"wrote {args.output} in {time.perf_counter() - t0:.0f}s")


if __name__ == "__main__":
    main()
