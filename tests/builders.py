"""Build small artifacts for tests directly with torch and the runtime's ArtifactWriter.

Kept independent of ``infership.convert`` so the runtime's tests do not depend on the converters; the
converters have their own tests.
"""

from __future__ import annotations

import tempfile
from collections.abc import Sequence
from pathlib import Path

import numpy as np


class tiny_models:
    @staticmethod
    def cnn(batch: int = 2, num_classes: int = 5):
        import torch
        from torch import nn

        torch.manual_seed(0)

        class TinyCNN(nn.Module):
            def __init__(self) -> None:
                super().__init__()
                self.conv = nn.Conv2d(3, 8, 3, padding=1)
                self.bn = nn.BatchNorm2d(8)
                self.fc = nn.Linear(8, num_classes)

            def forward(self, x):
                return self.fc(torch.relu(self.bn(self.conv(x))).mean((2, 3)))

        model = TinyCNN().eval()
        with torch.no_grad():  # non-trivial BN statistics so that errors would show
            model.bn.running_mean.uniform_(-0.2, 0.2)
            model.bn.running_var.uniform_(0.5, 1.5)
        return model, (torch.randn(batch, 3, 16, 16),)

    @staticmethod
    def two_in_two_out():
        import torch
        from torch import nn

        torch.manual_seed(1)

        class TwoIO(nn.Module):
            def __init__(self) -> None:
                super().__init__()
                self.conv = nn.Conv2d(3, 4, 3, padding=1)
                self.mix = nn.Linear(4 + 4, 6)
                self.head = nn.Linear(6, 3)

            def forward(self, image, extra):
                feat = torch.relu(self.conv(image)).mean((2, 3))
                embed = torch.tanh(self.mix(torch.cat([feat, extra], dim=1)))
                return self.head(embed), embed

        return TwoIO().eval(), (torch.randn(2, 3, 8, 8), torch.randn(2, 4))


def build_artifact_for_tests(
    model,
    example: tuple,
    root: Path,
    *,
    dynamic_batch: bool = True,
    input_names: Sequence[str] = ("x",),
    output_names: Sequence[str] = ("logits",),
    openvino: bool = True,
    task: str | None = None,
) -> Path:
    import torch
    from infership.runtime import ArtifactWriter, Manifest, Step
    from infership.runtime.artifact import read_onnx_specs

    with tempfile.TemporaryDirectory() as tmp:
        tmp_path = Path(tmp)
        onnx_path = tmp_path / "model.onnx"
        dyn = {n: {0: "batch"} for n in [*input_names, *output_names]} if dynamic_batch else None
        torch.onnx.export(
            model,
            example,
            str(onnx_path),
            dynamo=False,
            input_names=list(input_names),
            output_names=list(output_names),
            dynamic_axes=dyn,
            opset_version=17,
        )
        inputs, outputs = read_onnx_specs(onnx_path)
        manifest = Manifest(
            name=root.name, inputs=inputs, outputs=outputs, versions={"torch": torch.__version__}, task=task
        )
        w = ArtifactWriter.create(root, manifest, overwrite=True)
        rel = w.add_file(onnx_path, "model.onnx")
        w.put_variant("onnx-fp32", format="onnx", precision="fp32", files=[rel], steps=[])

        pt2 = tmp_path / "model.pt2"
        shapes = None
        if dynamic_batch:
            b = torch.export.Dim("batch", min=1, max=1024)
            shapes = tuple({0: b} for _ in example)
        program = torch.export.export(model, example, dynamic_shapes=shapes)
        torch.export.save(program, str(pt2))
        rel = w.add_file(pt2, "model.pt2")
        w.put_variant(
            "torch-fp32", format="torch-export", precision="fp32", files=[rel], steps=[Step("torch.export")]
        )

        if openvino:
            import openvino as ov

            ov_model = ov.convert_model(str(w.staging_dir / "model.onnx"))
            (w.staging_dir / "openvino").mkdir()
            ov.save_model(ov_model, str(w.staging_dir / "openvino" / "model.xml"), compress_to_fp16=False)
            files = [w.adopt("openvino/model.xml"), w.adopt("openvino/model.bin")]
            w.put_variant("openvino-fp32", format="openvino", precision="fp32", files=files)
        w.commit()
    return root


def reference_outputs(
    model, feeds: dict[str, np.ndarray], output_names: Sequence[str]
) -> dict[str, np.ndarray]:
    import torch

    with torch.no_grad():
        out = model(*[torch.from_numpy(v) for v in feeds.values()])
    if not isinstance(out, tuple):
        out = (out,)
    return {n: o.numpy() for n, o in zip(output_names, out, strict=True)}


def build_fake_artifact(
    root: Path,
    *,
    input_shape: Sequence[int | str],
    num_outputs: int,
    validation: dict | None = None,
) -> Path:
    """An artifact whose only variant is a placeholder file, runnable on the ``fake`` backend only:
    ``x`` [input_shape] float32 → ``logits`` [batch, num_outputs]. Builds in milliseconds, no torch."""
    from infership.runtime import ArtifactWriter, Manifest, TensorSpec

    manifest = Manifest(
        name=root.name,
        inputs=(TensorSpec("x", "float32", tuple(input_shape)),),
        outputs=(TensorSpec("logits", "float32", ("batch", num_outputs)),),
    )
    src = root.parent / f"{root.name}-placeholder.onnx"
    src.parent.mkdir(parents=True, exist_ok=True)
    src.write_bytes(b"not a model: the fake backend never reads it")
    w = ArtifactWriter.create(root, manifest)
    rel = w.add_file(src, "model.onnx")
    w.put_variant("onnx-fp32", format="onnx", precision="fp32", files=[rel], validation=validation)
    w.commit()
    return root
