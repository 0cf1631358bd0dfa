"""A fake backend for users' own tests (like httpx's MockTransport) and for measuring harness overhead.

It runs no model: outputs have the manifest's output specs, batch-sized like the input, filled by a
function you choose (zeros by default). Everything around it — input checks, batch splitting, threads,
context management — is the real Predictor, so tests of code that embeds a Predictor stay honest and fast.

Example::

    from infership.runtime.backends.fake import FakeBackend
    from infership.runtime import register_backend, Predictor
    register_backend("fake", FakeBackend)                    # built in already, shown for clarity
    with Predictor.load("model.onnx", backend="fake") as p:
        p.predict(x)
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

import numpy as np

from ..artifact import Artifact
from ..backend import BackendOptions, Placement, SessionBase
from ..errors import BackendUnavailable, InvalidInputError
from ..manifest import Variant
from ..spec import TensorSpec

OutputFn = Callable[[Mapping[str, np.ndarray], tuple[TensorSpec, ...]], dict[str, np.ndarray]]


def zeros_like_outputs(
    feeds: Mapping[str, np.ndarray], outputs: tuple[TensorSpec, ...]
) -> dict[str, np.ndarray]:
    """Zeros with each output's spec; dynamic axes take the batch size of the first input (or 1)."""
    n = next(iter(feeds.values())).shape[0] if feeds else 1
    out = {}
    for spec in outputs:
        shape = tuple(
            n if i == 0 and not isinstance(d, int) else (d if isinstance(d, int) else 1)
            for i, d in enumerate(spec.shape)
        )
        out[spec.name] = np.zeros(shape, dtype=spec.dtype)
    return out


class FakeBackend:
    """Opens any variant; ``extra={"fn": callable}`` replaces the zero outputs."""

    name = "fake"
    formats: tuple[str, ...] = ("onnx", "openvino", "torch-export", "torchscript")
    default_device = "cpu"
    honours: frozenset[str] = frozenset()
    extra_keys: frozenset[str] = frozenset({"fn"})

    def check(self, device: str | None = None) -> None:
        if device not in (None, "cpu"):
            raise BackendUnavailable(f"fake backend runs on 'cpu' only, got {device!r}")

    def open(self, artifact: Artifact, variant: Variant, options: BackendOptions) -> FakeSession:
        unknown = set(options.extra) - self.extra_keys
        if unknown:
            raise InvalidInputError(f"fake: unknown extra option(s) {sorted(unknown)}")
        fn = options.extra.get("fn", zeros_like_outputs)
        return FakeSession(artifact, fn)


class FakeSession(SessionBase):
    def __init__(self, artifact: Artifact, fn: OutputFn) -> None:
        self.inputs: tuple[TensorSpec, ...] = tuple(artifact.manifest.inputs)
        self.outputs: tuple[TensorSpec, ...] = tuple(artifact.manifest.outputs)
        self.placement = Placement(backend="fake", device="cpu", providers=("fake",))
        self._fn = fn

    def run(self, feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        return self._fn(feeds, self.outputs)
