"""The digits example for tests: its data (examples/digits/data.py), its CNN trained once per test session,
and artifacts built from it.

Importing this module imports the example's data.py, which registers the ``digits`` source scheme, so tests
may use ``"digits:train"`` strings as well as :func:`from_digits` / :func:`load_digits_split`. Used by the
calibration and int8 tests. Artifacts are built with ``tests.builders`` (torch.onnx, no
converters) and recorded as classifiers, cached per base directory; tests copy them before adding variants.
"""

from __future__ import annotations

import importlib.util
import shutil
import sys
from pathlib import Path
from types import ModuleType

from infership.calibration import load_callable

_EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "digits"
#: The example's data file: ``f"{DATA_PY}:train"`` / ``f"{DATA_PY}:test"`` are calibration source strings.
DATA_PY = _EXAMPLE / "data.py"
_cache: dict[tuple[str, str], Path] = {}


def data_module() -> ModuleType:
    """examples/digits/data.py, imported once by path the way ``from_spec("…/data.py:train")`` does."""
    return sys.modules[load_callable(f"{DATA_PY}:load_split").__module__]


#: The fixed split as ``(images [n, 1, 8, 8] float32, labels)``: ``"train"``, ``"test"`` or ``"all"``.
load_digits_split = data_module().load_split
#: The digits as a labelled ``CalibrationSet`` (``from_digits("test", preprocessing=..., batch_size=...)``).
from_digits = data_module().from_digits


def digits_module() -> ModuleType:
    """examples/digits/model.py, imported by path (examples/ is not a package)."""
    name = "infership_example_digits_model"
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(name, _EXAMPLE / "model.py")
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
    return sys.modules[name]


def trained_checkpoint(base: Path) -> Path:
    """Fine-tune the digits CNN with the example's recipe; ``torch.save(state_dict)`` (cached)."""
    key = (str(base), "checkpoint")
    if key not in _cache:
        import torch

        m = digits_module()
        x, y = load_digits_split("train")
        model = m.finetune(x, y, m.pretrain_backbone(x, y))
        path = base / "digits.pt"
        torch.save(model.state_dict(), path)
        _cache[key] = path
    return _cache[key]


def load_trained(base: Path):
    """The trained DigitsNet, in eval mode."""
    import torch

    model = digits_module().build_model()
    model.load_state_dict(torch.load(trained_checkpoint(base), weights_only=True))
    return model.eval()


def planted(model):
    """``model`` with two 1×1 convolutions after the first block that cancel out in fp32 (×1000 then
    ×1/1000 on channel 0) but give that activation a range no per-tensor int8 scale can serve: the other
    channels collapse to a few levels and int8 accuracy breaks. The culprit tensor is
    ``/plant/Conv_output_0`` between nodes ``/plant/Conv`` and ``/unplant/Conv``."""
    import torch
    from torch import nn

    class Planted(nn.Module):
        def __init__(self, net: nn.Module) -> None:
            super().__init__()
            self.net = net
            c = net.backbone.block1[0].out_channels
            self.plant = nn.Conv2d(c, c, 1)
            self.unplant = nn.Conv2d(c, c, 1)
            scale = torch.ones(c)
            scale[0] = 1000.0
            with torch.no_grad():
                self.plant.weight.copy_(torch.diag(scale)[:, :, None, None])
                self.unplant.weight.copy_(torch.diag(1.0 / scale)[:, :, None, None])
                self.plant.bias.zero_()
                self.unplant.bias.zero_()

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            b = self.net.backbone
            h = self.unplant(self.plant(b.block1(x)))
            return self.net.head(torch.flatten(b.pool(b.block3(b.block2(h))), 1))

    return Planted(model).eval()


def digits_artifact(base: Path, *, plant: bool = False) -> Path:
    """A pristine artifact (onnx-fp32 and torch-fp32) of the trained, optionally planted, digits CNN."""
    key = (str(base), "planted" if plant else "plain")
    if key not in _cache:
        import torch

        from tests.builders import build_artifact_for_tests

        model = load_trained(base)
        if plant:
            model = planted(model)
        root = base / ("digits-planted" if plant else "digits")
        # Its one [batch, 10] output alone does not make it a classifier (no labels, no image
        # preprocessing); the int8 tests judge it by accuracy and top-1 agreement.
        build_artifact_for_tests(
            model, (torch.zeros(2, 1, 8, 8),), root, openvino=False, task="classification"
        )
        _cache[key] = root
    return _cache[key]


def copy_artifact(src: Path, dest: Path) -> Path:
    """A private copy of an artifact for a test that adds variants to it."""
    shutil.copytree(src, dest)
    return dest


def shared_base(tmp_path_factory) -> Path:
    """One directory per test session, so the digits model is trained once for all test modules."""
    base = tmp_path_factory.getbasetemp() / "digits-shared"
    base.mkdir(exist_ok=True)
    return base
