"""Batch inference on Ray Data: outputs identical to the in-process Predictor, in input order.

The adapter's parsing and calling are tested without Ray; the end-to-end runs share one local Ray
(2 CPUs, slow: start-up)."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
from infership.runtime import ArtifactWriter, InvalidInputError, Manifest, Predictor, Preprocessing
from infership.serve.data import ArtifactBatchPredictor, batch_predict, describe_input

from tests.serve.conftest import needs_ray


@pytest.fixture(scope="module")
def image_artifact(tiny_artifact: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny CNN with image preprocessing recorded (resize 20, crop 16)."""
    from infership.runtime import Artifact

    tiny = Artifact.load(tiny_artifact).manifest
    root = tmp_path_factory.mktemp("img") / "tinyimg"
    pre = Preprocessing(input="x", resize=20, crop=(16, 16), mean=(0.5, 0.5, 0.5), std=(0.25, 0.25, 0.25))
    w = ArtifactWriter.create(
        root, Manifest(name="tinyimg", inputs=tiny.inputs, outputs=tiny.outputs, preprocessing=pre)
    )
    copy = root.parent / "model.onnx"  # add_file moves the file it is given
    shutil.copy(Path(tiny_artifact) / "model.onnx", copy)
    rel = w.add_file(copy, "model.onnx")
    w.put_variant("onnx-fp32", format="onnx", precision="fp32", files=[rel], steps=[])
    w.commit()
    return root


@pytest.fixture(scope="module")
def images(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from PIL import Image

    folder = tmp_path_factory.mktemp("photos")
    rng = np.random.default_rng(0)
    for i in range(12):
        h, w = rng.integers(20, 48, size=2)
        Image.fromarray(rng.integers(0, 256, size=(h, w, 3), dtype=np.uint8)).save(folder / f"{i:02d}.png")
    return folder


def test_describe_input(tmp_path, images):
    assert describe_input(images) == ("images", 12)
    np.save(tmp_path / "a.npy", np.zeros((3, 2)))
    assert describe_input(tmp_path / "a.npy")[0] == "npy"
    (tmp_path / "t.txt").write_text("hello\n")
    assert describe_input(tmp_path / "t.txt")[0] == "text"
    with pytest.raises(InvalidInputError, match="no such file"):
        describe_input(tmp_path / "missing.csv")


def test_refusals_before_ray_starts(tiny_artifact, tmp_path, images):
    (tmp_path / "t.txt").write_text("hello\n")
    with pytest.raises(InvalidInputError, match="tokenizer"):
        batch_predict(tiny_artifact, tmp_path / "t.txt", tmp_path / "o.npz")
    with pytest.raises(InvalidInputError, match="preprocessing"):
        batch_predict(tiny_artifact, images, tmp_path / "o.npz")


def test_the_adapter_without_ray(tiny_artifact, tmp_path):
    x = np.random.default_rng(1).standard_normal((5, 3, 16, 16)).astype(np.float32)
    np.save(tmp_path / "x.npy", x)
    with Predictor.load(tiny_artifact, backend="ort-cpu") as p:
        want = p.predict(x)["logits"]
    by_index = ArtifactBatchPredictor(str(tiny_artifact), backend="ort-cpu", source=str(tmp_path / "x.npy"))
    np.testing.assert_array_equal(by_index({"id": np.array([3, 1])})["logits"], want[[3, 1]])
    assert by_index.predictor.options.intra_op_threads == 1
    by_column = ArtifactBatchPredictor(str(tiny_artifact), backend="ort-cpu")
    flat = np.empty(2, dtype=object)  # Parquet gives one flattened list per row
    flat[0], flat[1] = x[0].reshape(-1), x[1].reshape(-1)
    np.testing.assert_array_equal(by_column({"x": flat})["logits"], want[:2])
    with pytest.raises(InvalidInputError, match="no column 'x'"):
        by_column({"y": flat})


@pytest.mark.slow
@needs_ray
def test_images_and_arrays_on_ray_data(local_ray, image_artifact, images, two_io_artifact, tmp_path):
    out = batch_predict(image_artifact, images, tmp_path / "img.npz", backend="ort-cpu", batch_size=5)
    got = np.load(out.output)
    files = sorted(str(p) for p in images.iterdir())
    with Predictor.load(image_artifact, backend="ort-cpu") as p:
        want = p.predict(files)["logits"]
    assert out.rows == 12 and got["path"].tolist() == files  # input order kept
    # 3 blocks of 4 paths; the pool bundles blocks up to a batch, so its first output holds 4 or 8 rows
    assert out.first_batch_rows in (4, 8) and 0 < out.first_batch_s <= out.seconds
    assert out.steady_rows_per_s == pytest.approx(
        (12 - out.first_batch_rows) / (out.seconds - out.first_batch_s)
    )
    np.testing.assert_array_equal(got["logits"], want)
    assert local_ray.is_initialized()  # a Ray it did not start is left running

    rng = np.random.default_rng(2)
    image, extra = (
        rng.standard_normal((9, 3, 8, 8)).astype(np.float32),
        rng.standard_normal((9, 4)).astype(np.float32),
    )
    np.savez(tmp_path / "two.npz", image=image, extra=extra)
    res = batch_predict(
        two_io_artifact, tmp_path / "two.npz", tmp_path / "two_out", backend="ort-cpu", batch_size=4
    )
    import pyarrow.parquet as pq

    table = pq.read_table(res.output)
    assert res.rows == 9 and table.num_rows == 9 and set(table.column_names) == {"logits", "embed"}
    assert res.first_batch_s is None and res.steady_rows_per_s is None  # Ray wrote it: no batch seen
    with Predictor.load(two_io_artifact, backend="ort-cpu") as p:
        want = p.predict({"image": image, "extra": extra})
    got_logits = np.stack([np.asarray(v, dtype=np.float32) for v in table.column("logits").to_pylist()])
    np.testing.assert_array_equal(got_logits, want["logits"])


class _Pid:
    """Records which actor process took each row."""

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        import os
        import time

        time.sleep(0.05)  # long enough that one actor cannot drain the dataset before the other starts
        return {"id": batch["id"], "pid": np.full(len(batch["id"]), os.getpid())}


@pytest.mark.slow
@needs_ray
def test_every_actor_of_the_pool_takes_rows(local_ray, tiny_artifact, tmp_path):
    """The dataset is cut into one block per batch: the pool hands out whole blocks, so arrays read as one
    block ran on one actor whatever ``concurrency`` said."""
    import ray.data
    from infership.serve.data import _dataset

    np.save(tmp_path / "x.npy", np.zeros((40, 3, 16, 16), np.float32))
    ds, source = _dataset(local_ray, "npy", tmp_path / "x.npy", ["x"], batch_size=4)
    assert ds.num_blocks() == 10 and source == str((tmp_path / "x.npy").resolve())
    ctx = ray.data.DataContext.get_current()
    waited, ctx.wait_for_min_actors_s = ctx.wait_for_min_actors_s, 120  # both actors up before any block
    try:
        out = ds.map_batches(
            _Pid, compute=ray.data.ActorPoolStrategy(size=2), num_cpus=1, batch_size=4, batch_format="numpy"
        )
        rows = [b for b in out.iter_batches(batch_format="numpy", batch_size=None)]
    finally:
        ctx.wait_for_min_actors_s = waited
    ids, pids = np.concatenate([b["id"] for b in rows]), np.concatenate([b["pid"] for b in rows])
    assert sorted(ids.tolist()) == list(range(40))
    assert len(set(pids.tolist())) == 2, f"rows per actor: {np.unique(pids, return_counts=True)}"
    lines = tmp_path / "t.txt"
    lines.write_text("\n".join(f"text {i}" for i in range(7)) + "\n", encoding="utf-8")
    assert _dataset(local_ray, "text", lines, ["input_ids"], batch_size=3)[0].num_blocks() == 3


@pytest.mark.slow
@needs_ray
def test_texts_on_ray_data(local_ray, text_artifact, tmp_path):
    texts = ["first line", "a second, longer line of text", "third"]
    (tmp_path / "texts.txt").write_text("\n".join(texts) + "\n", encoding="utf-8")
    res = batch_predict(
        text_artifact, tmp_path / "texts.txt", tmp_path / "t.npz", backend="ort-cpu", batch_size=1
    )
    got = np.load(res.output)
    with Predictor.load(text_artifact, backend="ort-cpu") as p:
        want = [p.predict([t]) for t in texts]  # batch 1: each text padded to its own length, as on Ray
    assert res.rows == 3
    for name in want[0]:
        np.testing.assert_allclose(got[name], np.concatenate([w[name] for w in want]), rtol=1e-5, atol=1e-6)
