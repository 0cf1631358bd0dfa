"""Image lists are decoded on several threads: the same tensor as one thread, the same first error, and as
many threads as the Predictor's model may use."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from infership.runtime import ArtifactWriter, InvalidInputError, Manifest, Predictor, Preprocessing
from infership.runtime import preprocess as P
from infership.runtime.spec import TensorSpec

PRE = Preprocessing(input="x", resize=20, crop=(16, 16), mean=(0.5, 0.5, 0.5), std=(0.25, 0.25, 0.25))
SPEC = TensorSpec("x", "float32", ["batch", 3, 16, 16])


@pytest.fixture(scope="module")
def photos(tmp_path_factory: pytest.TempPathFactory) -> list[str]:
    from PIL import Image

    folder = tmp_path_factory.mktemp("decode")
    rng = np.random.default_rng(0)
    paths = []
    for i in range(11):
        h, w = rng.integers(20, 64, size=2)
        path = folder / f"{i:02d}.{'png' if i % 2 else 'jpg'}"
        Image.fromarray(rng.integers(0, 256, size=(h, w, 3), dtype=np.uint8)).save(path)
        paths.append(str(path))
    return paths


@pytest.mark.parametrize("workers", [2, 3, 11, 64])
def test_threads_give_the_tensor_one_thread_gives(photos: list[str], workers: int):
    one = P.images_to_tensor(photos, PRE, SPEC)
    many = P.images_to_tensor(photos, PRE, SPEC, workers=workers)
    assert many.shape == (11, 3, 16, 16)
    np.testing.assert_array_equal(many, one)


def test_the_shares_run_on_several_threads(photos: list[str], monkeypatch):
    import threading
    import time

    from infership.runtime.profile import usable_cpus

    threads: set[int] = set()
    real = P.preprocess_image

    def slow(item, pre):
        threads.add(threading.get_ident())
        time.sleep(0.02)  # each share outlasts handing out the next, so an idle thread takes it
        return real(item, pre)

    monkeypatch.setattr(P, "preprocess_image", slow)
    P.images_to_tensor(photos, PRE, SPEC, workers=2)
    assert threading.get_ident() not in threads  # the pool did the work
    assert len(threads) == min(2, usable_cpus())  # one thread per share (the pool has one per usable CPU)


def test_a_pool_that_takes_no_more_work_leaves_one_thread(photos: list[str], monkeypatch):
    """After the main thread has ended (atexit handlers, threads outliving it) the pool refuses work."""
    from concurrent.futures import ThreadPoolExecutor

    closed = ThreadPoolExecutor(max_workers=2)
    closed.shutdown()
    monkeypatch.setattr(P, "_pool", lambda: closed)
    np.testing.assert_array_equal(
        P.images_to_tensor(photos, PRE, SPEC, workers=4), P.images_to_tensor(photos, PRE, SPEC)
    )


def test_pil_images_are_done_on_one_thread(photos: list[str], monkeypatch):
    from PIL import Image

    img = Image.open(photos[0])  # not loaded yet: listed twice, two threads would load it at once
    monkeypatch.setattr(P, "_pool", lambda: pytest.fail("a list with PIL images went to the pool"))
    got = P.images_to_tensor([img, photos[1], img], PRE, SPEC, workers=3)
    np.testing.assert_array_equal(got, P.images_to_tensor([photos[0], photos[1], photos[0]], PRE, SPEC))


def test_the_first_bad_image_in_the_list_is_the_one_reported(photos: list[str], tmp_path: Path):
    bad = []
    for name in ("b1.png", "b2.png"):
        (tmp_path / name).write_bytes(b"not an image")
        bad.append(str(tmp_path / name))
    items = [photos[0], bad[0], *photos[1:6], bad[1], *photos[6:]]
    for workers in (1, 4):
        with pytest.raises(InvalidInputError, match="b1.png"):
            P.images_to_tensor(items, PRE, SPEC, workers=workers)


@pytest.fixture(scope="module")
def image_artifact(tiny_artifact: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    from infership.runtime import Artifact

    tiny = Artifact.load(tiny_artifact).manifest
    root = tmp_path_factory.mktemp("decodeart") / "tinyimg"
    w = ArtifactWriter.create(
        root, Manifest(name="tinyimg", inputs=tiny.inputs, outputs=tiny.outputs, preprocessing=PRE)
    )
    copy = root.parent / "model.onnx"  # add_file moves the file it is given
    shutil.copy(Path(tiny_artifact) / "model.onnx", copy)
    w.put_variant(
        "onnx-fp32", format="onnx", precision="fp32", files=[w.add_file(copy, "model.onnx")], steps=[]
    )
    w.commit()
    return root


def test_a_predictor_decodes_on_its_own_threads(image_artifact: Path, photos: list[str], monkeypatch):
    seen: list[int] = []
    real = P.images_to_tensor

    def spy(items, pre, spec, *, workers=1):
        seen.append(workers)
        return real(items, pre, spec, workers=workers)

    monkeypatch.setattr(P, "images_to_tensor", spy)
    with Predictor.load(image_artifact, backend="ort-cpu") as p:
        default = p.predict(photos)["logits"]
    with Predictor.load(image_artifact, backend="ort-cpu", intra_op_threads=1) as p:
        single = p.predict(photos)["logits"]
    assert seen == [None, 1]  # every usable CPU by default; one in a one-thread actor
    np.testing.assert_allclose(default, single, rtol=1e-5, atol=1e-6)


def _decode_in_child(paths: list[str], out: Any) -> None:
    out.put(P.images_to_tensor(paths, PRE, SPEC, workers=2).shape)


def test_a_forked_child_decodes_on_its_own_threads(photos: list[str]):
    """The parent's pool has no threads in a forked child: the child must make its own, not wait forever."""
    import multiprocessing as mp

    P.images_to_tensor(photos, PRE, SPEC, workers=2)  # the parent's pool exists
    ctx = mp.get_context("fork")
    out = ctx.Queue()
    child = ctx.Process(target=_decode_in_child, args=(photos, out))
    child.start()
    child.join(timeout=120)
    alive = child.is_alive()
    if alive:
        child.kill()
    assert not alive, "the forked child hung decoding on its parent's pool"
    assert out.get(timeout=5) == (11, 3, 16, 16)
