"""Benchmarks of text encoders: token batches by sequence length (``--seq-len``), replayed real lengths
(``--replay``), padding strategies, runs keyed by their shape bucket. A tiny random-weight BERT exported with
its tokenizer (tests/convert/text_models.py), one ONNX variant, so the artifact builds in seconds."""

from __future__ import annotations

import contextlib
import io
import json
from pathlib import Path

import numpy as np
import pytest
from infership.runtime.errors import InvalidInputError

from tests.convert.text_models import SENTENCES, tiny_bert_folder

pytest.importorskip("transformers")
pytest.importorskip("tokenizers")

SHORT = dict(duration_s=0.15, max_duration_s=0.15, min_queries=3, warmup_queries=1, warmup_s=0.0)
SHORT_ARGS = ["--duration", "0.15", "--max-duration", "0.15", "--min-queries", "3", "--warmup", "1",
              "--warmup-seconds", "0", "--no-reference"]  # fmt: skip
MAX_LENGTH = 64  # the tiny BERT's position limit


@pytest.fixture(scope="module")
def text_artifact(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from infership.convert import build_artifact

    root = tmp_path_factory.mktemp("textbench")
    out = root / "bert"
    build_artifact(
        f"hf:{tiny_bert_folder(root / 'hf')}", out, task="feature-extraction", fp16=False, openvino=False,
        optimize=False, torch_program=False, validation_data=list(SENTENCES),
    )  # fmt: skip
    return out


@pytest.fixture(scope="module")
def encoder(text_artifact: Path):
    from infership.runtime import Artifact
    from infership.runtime.text import TextEncoder

    art = Artifact.load(text_artifact)
    return TextEncoder(art.manifest.tokenizer, art.root)


@pytest.fixture(scope="module")
def texts_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("texts") / "traffic.txt"
    path.write_text("\n".join(SENTENCES) + "\n\n")  # a blank line is skipped
    return path


def _width(feeds: dict[str, np.ndarray]) -> int:
    return int(feeds["input_ids"].shape[1])


def test_sequence_pool_rows_have_the_length_and_the_key(encoder) -> None:
    from infership.bench.inputs import token_pool

    pool = token_pool(encoder, batch_size=3, sequence=12, size=4)
    assert len(pool) == 4 and pool.source == "tokens" and pool.key == ("sequence=12",)
    for feeds in pool.items:
        assert set(feeds) == {"input_ids", "attention_mask", "token_type_ids"}
        assert feeds["input_ids"].shape == (3, 12) and feeds["input_ids"].dtype == np.int64
        assert feeds["attention_mask"].sum(axis=1).tolist() == [12, 12, 12]
    assert not np.array_equal(pool[0]["input_ids"], pool[1]["input_ids"])  # distinct batches rotate
    assert pool.shapes["input_ids"] == [3, 12]
    assert pool.tokens["sequence"] == 12 and pool.tokens["lengths"]["max"] == 12


def test_paddings_shape_the_batches(encoder) -> None:
    from infership.bench.inputs import token_pool

    assert _width(token_pool(encoder, batch_size=1, sequence=12, padding="longest")[0]) == 12
    bucket = token_pool(encoder, batch_size=1, sequence=12, padding="bucket")
    assert _width(bucket[0]) == 16 and bucket.key == ("sequence=12", "padding=bucket")
    assert bucket[0]["attention_mask"].sum() == 12  # the padding is masked out
    full = token_pool(encoder, batch_size=2, sequence=12, padding="max_length")
    assert _width(full[0]) == MAX_LENGTH and full.tokens["padding"] == "max_length"
    assert token_pool(encoder, batch_size=1, sequence=12, padding="buckets").tokens["padding"] == "bucket"
    with pytest.raises(InvalidInputError, match="padding must be one of"):
        token_pool(encoder, batch_size=1, sequence=12, padding="static")
    with pytest.raises(InvalidInputError, match=r"1\.\.64"):
        token_pool(encoder, batch_size=1, sequence=MAX_LENGTH + 1)
    with pytest.raises(InvalidInputError, match="one of them"):
        token_pool(encoder, batch_size=1)


def test_replay_follows_the_texts_token_lengths(encoder, texts_file: Path) -> None:
    from infership.bench.inputs import token_pool

    real = encoder.lengths(list(SENTENCES)).tolist()
    pool = token_pool(encoder, batch_size=1, replay=texts_file, size=2)
    # the whole file once (more batches than the pool size asked for), in file order
    assert len(pool) == len(SENTENCES) and pool.key == ("sequence=replay",)
    assert [int(f["attention_mask"].sum()) for f in pool.items] == real
    assert pool.tokens["lengths"]["max"] == max(real) and pool.tokens["replay"] == str(texts_file)
    batched = token_pool(encoder, batch_size=4, replay=texts_file)
    first = batched[0]
    assert first["attention_mask"].sum(axis=1).tolist() == real[:4]
    assert _width(first) == max(real[:4])  # padded to the batch's longest text
    bucketed = token_pool(encoder, batch_size=4, replay=texts_file, padding="bucket")
    assert all(_width(f) in (8, 16, 32, 64) for f in bucketed.items)
    with pytest.raises(InvalidInputError, match="not found"):
        token_pool(encoder, batch_size=1, replay=texts_file.with_name("missing.txt"))


def test_config_plans_a_run_per_shape_bucket(text_artifact: Path, texts_file: Path) -> None:
    from infership.bench import BenchConfig
    from infership.bench.config import TokenShape, plan_runs

    config = BenchConfig(artifact=text_artifact, batch_sizes=(1, 4), seq_lens=(8, 32, 8), replay=texts_file,
                         padding=("longest", "buckets"))  # fmt: skip
    assert config.seq_lens == (8, 32) and config.padding == ("longest", "bucket")
    runs = plan_runs(config)
    assert len(runs) == 3 * 2 * 2  # (8, 32, replay) × paddings × batch sizes
    assert [r.tokens for r in runs[:4]] == [TokenShape(8), TokenShape(8), TokenShape(8, "bucket"),
                                            TokenShape(8, "bucket")]  # fmt: skip
    assert runs[-1].describe().endswith("b4 c1 sequence=replay padding=bucket")
    assert config.to_dict()["replay"] == str(texts_file)
    assert [r.tokens for r in plan_runs(BenchConfig(artifact=text_artifact))] == [None]
    with pytest.raises(InvalidInputError, match=">= 1"):
        BenchConfig(artifact=text_artifact, seq_lens=(0,))
    with pytest.raises(InvalidInputError, match="padding applies to token inputs"):
        BenchConfig(artifact=text_artifact, padding=("bucket",))
    with pytest.raises(InvalidInputError, match="without shapes"):
        BenchConfig(artifact=text_artifact, seq_lens=(8,), shapes={"input_ids": (1, 8)})


def test_sweep_reports_each_sequence_length_and_compare_keys_them(
    text_artifact: Path, texts_file: Path
) -> None:
    from infership.bench import BenchConfig, run_sweep
    from infership.bench.compare import compare_results

    config = BenchConfig(artifact=text_artifact, backends=("ort-cpu",), seq_lens=(8, 32), replay=texts_file,
                         intra_op_threads=1, reference=False, **SHORT)  # fmt: skip
    results = run_sweep(config)
    keys = [r.key for r in results.runs]
    assert keys == [f"bert/ort-cpu@cpu/fp32/single-stream/b1/c1/sequence={s}" for s in (8, 32, "replay")]
    assert [r.settings.input_shapes["input_ids"] for r in results.runs[:2]] == [[1, 8], [1, 32]]
    assert results.runs[2].settings.input_source == "replay"
    assert results.runs[0].settings.tokens["sequence"] == 8
    # the harness's own overhead is measured on the same token batches
    assert results.overhead and results.overhead[0].settings.tokens["sequence"] == 8
    comparison = compare_results(results, results)
    assert sorted(row.key for row in comparison.rows) == sorted(keys)
    # the shape bucket survives the results file
    from infership.bench.results import BenchResults

    again = BenchResults.from_dict(json.loads(json.dumps(results.to_dict())))
    assert [r.key for r in again.runs] == keys and again.runs[1].settings.tokens["sequence"] == 32


def test_token_options_on_an_artifact_without_token_inputs_say_so(fake_artifact: Path) -> None:
    from infership.bench import BenchConfig, run_sweep

    config = BenchConfig(artifact=fake_artifact, backends=("fake",), seq_lens=(8,), measure_overhead=False,
                         reference=False, **SHORT)  # fmt: skip
    with pytest.raises(InvalidInputError, match="need token inputs.*no tokenizer"):
        run_sweep(config)


def test_a_text_encoder_without_lengths_points_to_seq_len(text_artifact: Path) -> None:
    from infership.bench import BenchConfig, run_sweep

    config = BenchConfig(artifact=text_artifact, backends=("ort-cpu",), measure_overhead=False, reference=False,
                         **SHORT)  # fmt: skip
    with pytest.raises(InvalidInputError, match="--seq-len"):
        run_sweep(config)


def test_cli_sweeps_sequence_lengths_and_paddings(text_artifact: Path, tmp_path: Path) -> None:
    from infership.cli import main

    out = tmp_path / "bench.json"
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        rc = main(["bench", str(text_artifact), "--backend", "ort-cpu", "--seq-len", "8,16", "--padding",
                   "longest,max_length", "--threads", "1", "--no-overhead", "--json", str(out), *SHORT_ARGS])  # fmt: skip
    assert rc == 0
    data = json.loads(out.read_text())
    assert [r["key_extra"] for r in data["runs"]] == [
        ["sequence=8"], ["sequence=8", "padding=max_length"], ["sequence=16"], ["sequence=16", "padding=max_length"]
    ]  # fmt: skip
    assert data["runs"][1]["settings"]["input_shapes"]["input_ids"] == [1, MAX_LENGTH]
    assert data["config"]["seq_lens"] == [8, 16]
    table = printed.getvalue()
    assert "sequence=16" in table and "padding=max_length" in table  # runs labelled by shape bucket


def test_neighbour_agreement_is_a_declared_figure_the_embedding_judge_reports() -> None:
    from infership.runtime.figures import Agreement, Better, Unit, figure_info
    from infership.runtime.tasks import Task, judge_for

    info = figure_info("neighbour_agreement")
    assert info is not None and (info.unit, info.better) == (Unit.FRACTION, Better.HIGHER)
    rng = np.random.default_rng(0)
    ref = rng.normal(size=(40, 8))
    cand = ref + rng.normal(scale=0.4, size=ref.shape)  # noisy enough that some neighbours change

    def nearest(v: np.ndarray) -> np.ndarray:
        unit = v / np.linalg.norm(v, axis=1, keepdims=True)
        sims = unit @ unit.T
        np.fill_diagonal(sims, -np.inf)
        return np.argsort(-sims, axis=1)[:, 0]

    expected = float(np.mean(nearest(ref) == nearest(cand)))
    assert 0.0 < expected < 1.0
    agreement = judge_for(Task.EMBEDDING).compare([{"embedding": ref}], [{"embedding": cand}])
    assert agreement.neighbour_agreement == pytest.approx(expected) == agreement.top1_agreement
    assert Agreement.from_dict(agreement.to_dict()).neighbour_agreement == agreement.neighbour_agreement
    assert Agreement(task="embedding", neighbour_agreement=0.97).loss_points == 3.0


def test_the_text_runtime_is_public(encoder) -> None:
    import infership.runtime as runtime

    import infership

    for name in ("TextEncoder", "Tokenizer", "Task"):
        assert name in runtime.__all__ and name in infership.__all__
        assert getattr(infership, name) is getattr(runtime, name)
    assert isinstance(encoder, infership.TextEncoder) and isinstance(encoder.record, infership.Tokenizer)


def test_ab_measures_each_shape_bucket_on_both_sides(text_artifact: Path) -> None:
    from infership.bench import BenchConfig
    from infership.bench.ab import ABConfig, run_ab
    from infership.bench.rule import Thresholds

    sweep = BenchConfig(artifact=text_artifact, backends=("ort-cpu",), seq_lens=(4, 16), intra_op_threads=1,
                        duration_s=0.2, max_duration_s=0.4, warmup_queries=1)  # fmt: skip
    out = run_ab(ABConfig(baseline=text_artifact, sweep=sweep, block_s=0.05, rest_s=0.0, confirm=False),
                 thresholds=Thresholds(max_slowdown=0.5))  # fmt: skip
    keys = [row.key for row in out.comparison.rows]
    assert keys == [f"bert/ort-cpu@cpu/fp32/single-stream/b1/c1/sequence={n}" for n in (4, 16)]
    shapes = [r.settings.input_shapes["input_ids"] for r in out.candidate.runs]
    assert shapes == [[1, 4], [1, 16]] == [r.settings.input_shapes["input_ids"] for r in out.baseline.runs]


def test_accuracy_is_re_measured_on_texts_with_the_artifacts_tokenizer(
    text_artifact: Path, texts_file: Path, tmp_path: Path
) -> None:
    """`bench --validation texts.txt` and `compare --rerun ... --validation texts.txt` read the texts with the
    artifact's tokenizer and judge them with the task's figures (embeddings: the sides' cosine and
    nearest-neighbour agreement), measured, not copied from the manifest."""
    import shutil

    from infership.bench.ab import ABConfig, run_ab
    from infership.bench.config import BenchConfig
    from infership.bench.rule import Thresholds

    from infership.cli import main

    out = tmp_path / "bench.json"
    rc = main(["bench", str(text_artifact), "--backend", "ort-cpu", "--seq-len", "8", *SHORT_ARGS, "--validation", str(texts_file),
               "--json", str(out)])  # fmt: skip
    assert rc == 0
    record = json.loads(out.read_text())["runs"][0]["accuracy"]
    assert record["samples"] == len(SENTENCES) and record["source"] == f"measured on {texts_file}"
    copy = tmp_path / "copy"
    shutil.copytree(text_artifact, copy)
    sweep = BenchConfig(artifact=copy, backends=("ort-cpu",), intra_op_threads=1, seq_lens=(8,), duration_s=0.3,
                        max_duration_s=0.6, warmup_queries=2, warmup_s=0.0)  # fmt: skip
    result = run_ab(
        ABConfig(baseline=text_artifact, sweep=sweep, block_s=0.1, rest_s=0.02, validation=str(texts_file)),
        thresholds=Thresholds(max_slowdown=1.0),
    )
    figures = {f.metric: f for f in result.comparison.rows[0].figures}
    assert figures["samples"].current == len(SENTENCES)
    assert figures["cosine_mean"].current == pytest.approx(1.0, abs=1e-6)
    assert figures["top1_agreement"].current == figures["neighbour_agreement"].current == 1.0
    assert not any(f.regression for f in figures.values())


def test_optimize_judges_candidates_on_texts_tokenized_with_the_artifacts_tokenizer(
    text_artifact: Path, texts_file: Path
) -> None:
    from infership.runtime import Artifact

    from infership.optimize_checks import held_out_data

    data = held_out_data(Artifact.load(text_artifact), validation=str(texts_file), calibration=None)
    batches = list(data.batches())
    assert sum(len(b.feeds["input_ids"]) for b in batches) == len(SENTENCES)
    assert all(b.feeds["input_ids"].dtype == np.int64 for b in batches)
    assert {"input_ids", "attention_mask"} <= set(batches[0].feeds)


def test_explain_measures_a_text_encoder_at_the_given_length(text_artifact: Path, capsys) -> None:
    from infership.cli import main
    from infership.explain import explain

    shapes = {name: (1, 8) for name in ("input_ids", "attention_mask", "token_type_ids")}
    e = explain(text_artifact, shapes=shapes)
    assert e.profiled and e.top_ops, e.lines  # the runtime's profiler ran on token inputs of length 8
    assert e.thread_scaling, e.lines
    args = ["explain", str(text_artifact)] + [f"--shape={n}=1x8" for n in shapes]
    assert main(args) == 0 and "Top operators" in capsys.readouterr().out
