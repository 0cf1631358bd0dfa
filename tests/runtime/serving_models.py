"""Small artifacts for the serving aids' tests: a token model with a dynamic sequence axis, and a classifier
whose manifest records reference statistics."""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np


def build_token_model(root: Path) -> Path:
    """``ids`` [batch, seq] int64 and ``mask`` [batch, seq] int64 → ``tokens`` [batch, seq, 4] (per-token
    embeddings) and ``pooled`` [batch, 4] (masked mean): padding with mask 0 leaves ``pooled`` unchanged."""
    import torch
    from infership.runtime import ArtifactWriter, Manifest
    from infership.runtime.artifact import read_onnx_specs
    from torch import nn

    torch.manual_seed(0)

    class Tokens(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.embed = nn.Embedding(50, 4)
            self.proj = nn.Linear(4, 4)

        def forward(self, ids, mask):
            tokens = torch.tanh(self.proj(self.embed(ids)))
            m = mask.unsqueeze(-1).to(tokens.dtype)
            pooled = (tokens * m).sum(1) / m.sum(1).clamp(min=1.0)
            return tokens, pooled

    model = Tokens().eval()
    example = (torch.randint(1, 50, (2, 5)), torch.ones(2, 5, dtype=torch.int64))
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "model.onnx"
        dyn = {
            "ids": {0: "batch", 1: "seq"},
            "mask": {0: "batch", 1: "seq"},
            "tokens": {0: "batch", 1: "seq"},
        }
        dyn["pooled"] = {0: "batch"}
        torch.onnx.export(
            model,
            example,
            str(path),
            dynamo=False,
            input_names=["ids", "mask"],
            output_names=["tokens", "pooled"],
            dynamic_axes=dyn,
            opset_version=17,
        )
        inputs, outputs = read_onnx_specs(path)
        w = ArtifactWriter.create(
            root, Manifest(name=root.name, inputs=inputs, outputs=outputs), overwrite=True
        )
        rel = w.add_file(path, "model.onnx")
        w.put_variant("onnx-fp32", format="onnx", precision="fp32", files=[rel], steps=[])
        w.commit()
    return root


def token_request(rng: np.random.Generator, length: int) -> dict[str, np.ndarray]:
    ids = rng.integers(1, 50, size=(1, length)).astype(np.int64)
    return {"ids": ids, "mask": np.ones_like(ids)}
