"""No silent fallback: a backend that cannot run raises, unless the caller gave a fallback list.

These run against the real onnxruntime wheel installed here (the GPU build, which advertises the CUDA and
TensorRT providers even though this machine has no GPU) — exactly the situation where ONNX Runtime itself
falls back to the CPU with only a log line.
"""

from __future__ import annotations

import json
import subprocess
import sys
import warnings

import numpy as np
import pytest
from infership.runtime import Artifact, BackendOptions, get_backend
from infership.runtime.hardware import no_gpu_reason

from infership import BackendFallbackWarning, BackendUnavailable, InvalidInputError, Predictor

needs_no_gpu = pytest.mark.skipif(
    no_gpu_reason() is None, reason="this machine has a GPU; the test is about lacking one"
)


def _advertised(provider: str) -> bool:
    import onnxruntime

    return provider in onnxruntime.get_available_providers()


@needs_no_gpu
@pytest.mark.parametrize("backend", ["ort-cuda", "ort-trt"])
def test_unavailable_gpu_backend_raises_with_reason(tiny_artifact, backend):
    with pytest.raises(BackendUnavailable) as info:
        Predictor.load(tiny_artifact, backend=backend)
    assert "GPU" in str(info.value) or "not in this onnxruntime build" in str(info.value)


@needs_no_gpu
def test_session_level_guard_catches_ort_silent_cpu_fallback(tiny_artifact):
    """Bypass check() and open the CUDA provider directly: ORT would quietly run on the CPU (the GPU build when
    CUDA fails to initialise; the CPU build after a warning that the provider is not in it); we raise."""
    art = Artifact.load(tiny_artifact)
    variant = art.manifest.variant("onnx-fp32")
    with pytest.raises(
        BackendUnavailable,
        match=r"asked for CUDAExecutionProvider but ONNX Runtime is running on \['CPUExecutionProvider'\]",
    ):
        get_backend("ort-cuda").open(art, variant, BackendOptions(device="cuda"))


@needs_no_gpu
def test_explicit_fallback_warns_and_is_recorded(tiny_artifact):
    with pytest.warns(BackendFallbackWarning, match="'ort-cuda' could not run"):
        p = Predictor.load(tiny_artifact, backend="ort-cuda", fallback=["ort-cpu"])
    with p:
        assert p.backend == "ort-cpu"
        assert p.placement.fallback_from == "ort-cuda"
        assert p.placement.fallback_reason
        assert p.predict(np.zeros((1, 3, 16, 16), np.float32))["logits"].shape == (1, 5)


def test_no_warning_when_first_choice_runs(tiny_artifact):
    with warnings.catch_warnings():
        warnings.simplefilter("error", BackendFallbackWarning)
        with Predictor.load(tiny_artifact, backend="ort-cpu", fallback=["torch"]) as p:
            assert p.placement.fallback_from is None


def test_placement_reports_node_counts(tiny_artifact):
    with Predictor.load(tiny_artifact, backend="ort-cpu", extra={"record_placement": True}) as p:
        counts = p.placement.node_counts
    assert counts is not None and counts.get("CPUExecutionProvider", 0) > 0
    with Predictor.load(tiny_artifact, backend="ort-cpu") as p:  # off by default on the CPU (load time)
        assert p.placement.node_counts is None


def test_auto_picks_per_documented_rule(tiny_artifact):
    """The README's rule, written out here: CPU (x86) openvino > ort-cpu > torch; GPU ort-trt > ort-cuda > torch."""
    import platform

    from infership.runtime.registry import is_available

    with Predictor.load(tiny_artifact) as p:
        if no_gpu_reason():
            x86 = platform.machine().lower() in ("x86_64", "amd64")
            documented = ("openvino", "ort-cpu", "torch") if x86 else ("ort-cpu", "openvino", "torch")
            assert p.backend == next(b for b in documented if is_available(b) is None)
            if x86 and is_available("openvino") is None:
                assert p.backend == "openvino"
        else:
            assert p.backend == next(
                b for b in ("ort-trt", "ort-cuda", "torch") if is_available(b, "cuda") is None
            )
            assert p.placement.device.startswith("cuda")


def test_unknown_backend_and_options(tiny_artifact):
    with pytest.raises(BackendUnavailable, match="unknown backend 'tensorflow'"):
        Predictor.load(tiny_artifact, backend="tensorflow")
    with pytest.raises(ValueError, match="unknown option"):
        Predictor.load(tiny_artifact, backend="ort-cpu", intra_threads=2)
    with pytest.raises(ValueError, match="unknown extra option"):
        Predictor.load(tiny_artifact, backend="ort-cpu", extra={"nope": 1})


def test_missing_precision_is_clear(tiny_artifact):
    from infership import ArtifactError

    with pytest.raises(ArtifactError, match="has no int8 variant"):
        Predictor.load(tiny_artifact, backend="ort-cpu", precision="int8")
    with pytest.raises(ArtifactError, match="has no fp16 variant"):
        Predictor.load(tiny_artifact, precision="fp16")


@needs_no_gpu
def test_cli_backends_is_truthful():
    out = subprocess.run(
        [sys.executable, "-m", "infership", "backends", "--json"], capture_output=True, text=True, check=True
    ).stdout
    rows = {r["name"]: r for r in json.loads(out)}
    assert rows["ort-cpu"]["available"] is True
    for gpu_backend in ("ort-cuda", "ort-trt"):
        assert rows[gpu_backend]["available"] is False
        assert rows[gpu_backend]["reason"]
    if _advertised("CUDAExecutionProvider"):
        assert "no NVIDIA GPU" in rows["ort-cuda"]["reason"]


@needs_no_gpu
def test_auto_warns_and_records_when_a_backend_fails_to_open(tiny_artifact, monkeypatch):
    """A backend that passes check() but fails to open (a failed compile, say) is never skipped silently."""
    from infership.runtime import register_backend, selection
    from infership.runtime.backends.fake import FakeBackend

    class FailsToOpen(FakeBackend):
        name = "fails-to-open"

        def open(self, artifact, variant, options):
            raise BackendUnavailable("compilation failed")

    register_backend("fails-to-open", FailsToOpen)
    monkeypatch.setattr(selection, "CPU_ORDER", ("fails-to-open", "ort-cpu"))
    with pytest.warns(
        BackendFallbackWarning, match="'fails-to-open' could not run .*compilation failed.*auto"
    ):
        p = Predictor.load(tiny_artifact)
    with p:
        assert p.backend == "ort-cpu"
        assert p.placement.fallback_from == "fails-to-open"


@needs_no_gpu
def test_autotune_times_every_candidate_and_keeps_the_fastest(tiny_artifact):
    from infership.runtime.registry import is_available
    from infership.runtime.selection import CPU_ORDER

    eligible = [b for b in CPU_ORDER if is_available(b) is None]
    with Predictor.load(tiny_artifact, autotune=True) as p:
        timings = p.placement.details["autotune_ms"]
        assert set(timings) == set(eligible)
        assert p.backend == min(timings, key=timings.get)
        assert p.predict(np.zeros((2, 3, 16, 16), np.float32))["logits"].shape == (2, 5)


def test_autotune_is_skipped_with_a_reason_for_other_dynamic_axes(tiny_artifact, caplog):
    from dataclasses import replace as dc_replace

    from infership.runtime import Artifact

    art = Artifact.load(tiny_artifact)
    spec = art.manifest.inputs[0]
    dyn = Artifact(
        art.root, dc_replace(art.manifest, inputs=(dc_replace(spec, shape=("batch", 3, "h", "w")),))
    )
    with caplog.at_level("WARNING"):
        with Predictor.load(dyn, autotune=True) as p:
            assert "autotune_ms" not in p.placement.details
    assert "autotune skipped" in caplog.text


@needs_no_gpu
def test_autotune_warns_about_a_candidate_that_fails_to_open(tiny_artifact, monkeypatch):
    from infership.runtime import register_backend, selection
    from infership.runtime.backends.fake import FakeBackend

    class FailsToOpen(FakeBackend):
        name = "fails-to-open"

        def open(self, artifact, variant, options):
            raise BackendUnavailable("compilation failed")

    register_backend("fails-to-open", FailsToOpen)
    monkeypatch.setattr(selection, "CPU_ORDER", ("fails-to-open", "ort-cpu", "openvino"))
    with pytest.warns(BackendFallbackWarning, match="'fails-to-open' could not run"):
        p = Predictor.load(tiny_artifact, autotune=True)
    with p:
        assert set(p.placement.details["autotune_ms"]) == {"ort-cpu", "openvino"}
        assert p.placement.fallback_from == "fails-to-open"


def test_openvino_static_batch_is_checked(tiny_artifact):
    for bad in (0, -1, 1.5, True, "8"):
        with pytest.raises(InvalidInputError, match="static_batch must be a whole number"):
            Predictor.load(tiny_artifact, backend="openvino", extra={"static_batch": bad})
    with Predictor.load(tiny_artifact, backend="openvino", extra={"static_batch": 2}) as p:
        out = p.predict(np.zeros((3, 3, 16, 16), np.float32))  # 2 + 1 padded to 2
        assert next(iter(out.values())).shape[0] == 3
