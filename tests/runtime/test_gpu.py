"""GPU paths: CUDA/TensorRT execution providers, IO binding with device tensors, torch on CUDA.

The tests marked ``gpu``/``tensorrt`` skip (with the reason) on machines without an NVIDIA GPU. The
TensorRT cache-keying and profile tests run everywhere: they are pure functions of the manifest and the
environment.
"""

from __future__ import annotations

import shutil
from dataclasses import replace

import numpy as np
import pytest
from infership.runtime import Artifact, BackendOptions

from infership import BackendUnavailable, Predictor

X = np.random.default_rng(7).standard_normal((4, 3, 16, 16), dtype=np.float32)


@pytest.fixture(scope="module")
def cpu_reference(tiny_artifact):
    with Predictor.load(tiny_artifact, backend="ort-cpu") as p:
        return p.predict(X)["logits"]


@pytest.mark.gpu
@pytest.mark.parametrize("backend", ["ort-cuda", "torch"])
def test_cuda_backends_take_device_tensors_without_host_round_trip(tiny_artifact, cpu_reference, backend):
    import torch

    with Predictor.load(tiny_artifact, backend=backend, device="cuda") as p:
        assert p.placement.device.startswith("cuda")
        if backend == "ort-cuda":
            assert p.placement.providers[0] == "CUDAExecutionProvider"
            assert p.placement.node_counts and p.placement.node_counts.get("CUDAExecutionProvider", 0) > 0
        host = p.predict(X)["logits"]
        dev = p.predict(torch.from_numpy(X).cuda())["logits"]
        with pytest.raises(ValueError, match="device tensors are not cast"):
            p.predict(torch.from_numpy(X).cuda().double())
    np.testing.assert_allclose(host, cpu_reference, atol=1e-3, rtol=1e-3)
    np.testing.assert_allclose(dev, host, atol=1e-5)


@pytest.mark.gpu
@pytest.mark.tensorrt
def test_tensorrt_engine_cache_is_built_then_reused(tiny_artifact, tmp_path, cpu_reference):
    art_dir = tmp_path / "a"
    shutil.copytree(tiny_artifact, art_dir, ignore=shutil.ignore_patterns("cache"))
    cache = tmp_path / "cache"
    with Predictor.load(art_dir, backend="ort-trt", extra={"max_batch": 8}, cache_dir=cache) as p:
        assert p.placement.providers[0] == "TensorrtExecutionProvider"
        np.testing.assert_allclose(p.predict(X)["logits"], cpu_reference, atol=1e-2, rtol=1e-2)
    engines = list((cache / "trt").rglob("*.engine"))
    assert engines, "TensorRT should have written an engine into the cache folder"
    assert not (art_dir / "cache").exists(), "engines are never kept under the artifact"
    stamp = {e: e.stat().st_mtime_ns for e in engines}
    with Predictor.load(art_dir, backend="ort-trt", extra={"max_batch": 8}, cache_dir=cache) as p:
        p.predict(X)
    assert {e: e.stat().st_mtime_ns for e in engines} == stamp, (
        "the cached engine must be reused, not rebuilt"
    )


def test_trt_profile_from_manifest_dims(tiny_artifact):
    from infership.runtime.backends.ort import trt_profile

    art = Artifact.load(tiny_artifact)
    prof = trt_profile(art, BackendOptions(extra={"max_batch": 16, "opt_batch": 4}))
    assert prof == {"x": ([1, 3, 16, 16], [4, 3, 16, 16], [16, 3, 16, 16])}
    given = trt_profile(
        art, BackendOptions(extra={"shape_ranges": {"x": [[1, 3, 16, 16], [2, 3, 16, 16], [2, 3, 16, 16]]}})
    )
    assert given["x"][2] == [2, 3, 16, 16]


def test_trt_profile_needs_ranges_for_dynamic_spatial_dims(tiny_artifact):
    from infership.runtime.backends.ort import trt_profile

    art = Artifact.load(tiny_artifact)
    spec = art.manifest.inputs[0]
    dyn = replace(art.manifest, inputs=(replace(spec, shape=("batch", 3, "h", "w")),))
    with pytest.raises(BackendUnavailable, match="shape_ranges"):
        trt_profile(Artifact(art.root, dyn), BackendOptions())


def test_trt_cache_key_changes_with_model_and_profile(tiny_artifact, tmp_path):
    from infership.runtime.backends.ort import trt_cache_dir

    art = Artifact.load(tiny_artifact)
    v = art.manifest.variant("onnx-fp32")
    opts = BackendOptions(device="cuda", cache_dir=tmp_path)
    a = trt_cache_dir(art, v, opts, {"x": ([1], [1], [8])})
    assert a == trt_cache_dir(art, v, opts, {"x": ([1], [1], [8])}), "same inputs, same key"
    assert a != trt_cache_dir(art, v, opts, {"x": ([1], [1], [16])}), "another profile, another engine"
    other = replace(v, files=(replace(v.files[0], sha256="0" * 64),))
    assert a != trt_cache_dir(art, other, opts, {"x": ([1], [1], [8])}), "another model, another engine"
    assert a.parent == tmp_path / "trt", "engines live in the cache folder, keyed by the model's hash"
