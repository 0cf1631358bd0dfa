"""infership optimize / explain / peers on a tiny classifier, with the real runtimes and short budgets.

These check the mechanics (profile stored and used, accuracy gate, pruning, objectives, CLI); whether the
chosen path is fast is measured by ``benchmarks/optimize_suite.py``, never asserted here.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from infership.runtime import Artifact, ArtifactWriter, Predictor
from infership.runtime.errors import InvalidInputError
from infership.runtime.manifest import Manifest
from infership.runtime.spec import TensorSpec

from tests.builders import build_artifact_for_tests, tiny_models

BUDGET_POINTS = 50.0  # random weights on random data: int8 disagrees on close calls; mechanics only


@pytest.fixture(scope="module")
def template(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, object]:
    """A classification artifact (onnx-fp32, torch-fp32, openvino-fp32), labelled data and the module."""
    import torch

    root = tmp_path_factory.mktemp("optimize")
    model, example = tiny_models.cnn()
    art = build_artifact_for_tests(model, example, root / "cls", task="classification")
    x = np.random.default_rng(0).normal(size=(96, 3, 16, 16)).astype(np.float32)
    with torch.no_grad():
        labels = model(torch.from_numpy(x)).argmax(-1).numpy()
    data = root / "data.npz"
    np.savez(data, x=x, labels=labels)
    return art, data, model


@pytest.fixture(scope="module")
def quantized(template: tuple[Path, Path, object], tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The template with int8 variants made by ``optimize``'s first step (ONNX Runtime per channel and per
    tensor, and OpenVINO from the ONNX graph and from the converted graph)."""
    from infership.optimize_checks import make_int8

    art, data, _ = template
    dest = tmp_path_factory.mktemp("quantized") / "cls"
    shutil.copytree(art, dest)
    records = make_int8(dest, str(data), budget=BUDGET_POINTS)
    assert [(r["variant"], r["status"]) for r in records] == [
        ("onnx-int8", "made"), ("onnx-int8-tensor", "made"), ("openvino-int8", "made"),
        ("openvino-int8-ir", "made"),
    ], records  # fmt: skip
    return dest


def _copy(src: Path, tmp_path: Path) -> Path:
    dest = tmp_path / "art"
    shutil.copytree(src, dest)
    return dest


def test_optimize_stores_a_profile_that_load_opens(quantized: Path, tmp_path: Path) -> None:
    from infership.optimizer import optimize

    art = _copy(quantized, tmp_path)
    report = optimize(art, time_budget_s=8, max_accuracy_drop=BUDGET_POINTS, backends=["ort-cpu", "openvino"])
    c = report.chosen
    assert c is not None and c.status == "chosen" and report.committed
    assert c.accuracy in ("reference", "recorded", "measured")
    assert report.rounds >= 2 and any(t.status.startswith("pruned") for t in report.trials)
    assert c.load_ms is not None and c.first_ms is not None  # cold start recorded
    json.dumps(report.to_dict())
    with Predictor.load(art) as p:
        assert (p.backend, p.variant.id) == (c.candidate.backend, c.candidate.variant)
        assert p.placement.details["selection"] == "from profile"
        for name, value in c.candidate.settings.items():
            if name in ("intra_op_threads", "num_streams", "inter_op_threads"):
                assert getattr(p.options, name) == value


def test_a_variant_outside_the_accuracy_budget_is_never_chosen(quantized: Path, tmp_path: Path) -> None:
    from infership.optimizer import optimize

    art = _copy(quantized, tmp_path)
    a = Artifact.load(art)
    w = ArtifactWriter.update(a)  # only the int8 ONNX variant is left for ONNX Runtime, its record failing
    v = a.manifest.variant("onnx-int8")
    bad = {**(v.validation or {}), "passed": False, "loss_points": 9.0}
    keep = tuple(x for x in a.manifest.variants if x.id not in ("onnx-fp32", "onnx-int8", "onnx-int8-tensor"))
    w.set_manifest(variants=(*keep, type(v)(**{**v.__dict__, "validation": bad})))
    w.commit()
    report = optimize(
        art, time_budget_s=4, max_accuracy_drop=BUDGET_POINTS, backends=["ort-cpu"], write=False
    )
    assert report.chosen is None and report.profile is None
    assert any(t.status == "rejected" and "over budget" in t.accuracy for t in report.trials)


def test_unvalidated_candidates_are_judged_with_the_task_judge(
    template: tuple[Path, Path, object], quantized: Path, tmp_path: Path
) -> None:
    """An int8 variant without a record is measured on held-out data: the same graph passes, a different
    model (its weights negated) is rejected; without data it is not validated."""
    import torch

    from infership.optimize_checks import AccuracyChecks, held_out_data
    from infership.optimize_space import Candidate

    art = _copy(template[0], tmp_path)
    model, example = tiny_models.cnn()
    with torch.no_grad():
        model.fc.weight.neg_()
    other = build_artifact_for_tests(model, example, tmp_path / "other", openvino=False)
    a = Artifact.load(art)
    w = ArtifactWriter.update(a)
    same = w.add_file(art / "model.onnx", "same.onnx", move=False)
    diff = w.add_file(other / "model.onnx", "diff.onnx", move=False)
    w.put_variant("same-int8", format="onnx", precision="int8", files=[same])
    w.put_variant("diff-int8", format="onnx", precision="int8", files=[diff])
    a = w.commit()
    data = held_out_data(a, validation=str(template[1]), calibration=None)
    checks = AccuracyChecks(a, budget=1.0, data=data)
    ok = checks.verdict(Candidate("ort-cpu", "same-int8", "int8"))
    assert (ok.ok, ok.how, ok.loss_points) == (True, "measured", 0.0)
    bad = checks.verdict(Candidate("ort-cpu", "diff-int8", "int8"))
    assert not bad.ok and "over budget" in bad.how and bad.loss_points > 1.0
    assert checks.verdict(Candidate("ort-cpu", "onnx-fp32", "fp32")).how == "reference"
    blind = AccuracyChecks(a, budget=1.0, data=None).verdict(Candidate("ort-cpu", "same-int8", "int8"))
    assert not blind.ok and blind.how.startswith("not validated")
    q = Artifact.load(quantized)
    rec = AccuracyChecks(q, budget=BUDGET_POINTS, data=None).verdict(
        Candidate("openvino", "openvino-int8", "int8")
    )
    assert rec.ok and rec.how == "recorded"
    # recorded on another backend: not taken as validated for this one
    assert (
        not AccuracyChecks(q, budget=BUDGET_POINTS, data=None)
        .verdict(Candidate("openvino", "onnx-int8", "int8"))
        .ok
    )


def test_a_short_budget_prunes_and_leaves_candidates_unmeasured(quantized: Path, tmp_path: Path) -> None:
    from infership.optimizer import optimize

    art = _copy(quantized, tmp_path)
    report = optimize(art, time_budget_s=1.5, max_accuracy_drop=BUDGET_POINTS, write=False)
    statuses = {t.status for t in report.trials}
    assert "not measured" in statuses
    assert report.chosen is not None  # every path's first settings come first: something ran


def test_throughput_objective_records_batch_and_callers(quantized: Path, tmp_path: Path) -> None:
    from infership.optimizer import optimize

    art = _copy(quantized, tmp_path)
    report = optimize(
        art, objective="throughput", time_budget_s=8, max_accuracy_drop=BUDGET_POINTS, batch_sizes=[1, 4],
        backends=["openvino", "ort-cpu"],
    )  # fmt: skip
    prof = report.profile
    assert prof is not None and prof.objective == "throughput" and prof.batch_size in (1, 4)
    assert {t.candidate.batch_size for t in report.trials} == {1, 4}
    assert prof.figures["throughput"] > 0
    with Predictor.load(art, hint="throughput") as p:
        assert p.placement.details["profile"]["objective"] == "throughput"
    with Predictor.load(art) as p:  # no latency profile: the rule
        assert p.placement.details.get("selection") != "from profile"


def test_latency_budget_objective_and_argument_errors(quantized: Path) -> None:
    from infership.optimizer import optimize

    with pytest.raises(InvalidInputError, match="latency-budget needs"):
        optimize(quantized, objective="latency-budget", time_budget_s=1)
    with pytest.raises(InvalidInputError, match="objective must be"):
        optimize(quantized, objective="speed", time_budget_s=1)
    with pytest.raises(InvalidInputError, match="time budget"):
        optimize(quantized, time_budget_s=0)


def test_latency_budget_keeps_p99_under_the_bound(quantized: Path, tmp_path: Path) -> None:
    from infership.optimizer import optimize

    art = _copy(quantized, tmp_path)
    report = optimize(
        art, objective="latency-budget", latency_budget_ms=1e-4, time_budget_s=3, backends=["ort-cpu"],
        batch_sizes=[1], max_accuracy_drop=BUDGET_POINTS, write=False,
    )  # fmt: skip
    assert report.chosen is None  # nothing answers in 0.1 microseconds
    assert any(t.status == "over bound" for t in report.trials)


def test_dynamic_inputs_need_a_shape_and_record_its_bucket() -> None:
    from infership.optimizer import _shape_bucket

    m = Manifest(name="t", inputs=(TensorSpec("ids", "int64", ("batch", "sequence")),),
                 outputs=(TensorSpec("y", "float32", ("batch", 4)),))  # fmt: skip
    a = Artifact(Path("."), m)
    with pytest.raises(InvalidInputError, match="--shape ids=1x128"):
        _shape_bucket(a, {})
    assert _shape_bucket(a, {"ids": (1, 128)}) == "sequence=128"


def test_cli_optimize_and_explain(quantized: Path, tmp_path: Path, capsys) -> None:
    from infership.cli import main

    art = _copy(quantized, tmp_path)
    out = tmp_path / "report.json"
    code = main(["optimize", str(art), "--time-budget", "4", "--backend", "ort-cpu", "--no-explain",
                 "--max-accuracy-drop", str(BUDGET_POINTS), "--json", str(out)])  # fmt: skip
    text = capsys.readouterr().out
    assert code == 0 and "chosen:" in text and "cold start" in text and "candidates" in text
    data = json.loads(out.read_text())
    assert data["chosen"]["backend"] == "ort-cpu" and data["committed"]
    assert main(["explain", str(art)]) == 0
    text = capsys.readouterr().out
    assert "int8 support" in text and "Top operators" in text


def test_a_later_round_keeps_only_the_survivors_whose_measuring_fits_the_time_left() -> None:
    """The next round's cost is estimated from each survivor's load and query time (a large batch of a
    large model takes seconds per query), and the lowest ranked are pruned until it fits."""
    import time

    from infership.optimize_search import BLOCKS, Search, Trial
    from infership.optimize_space import Candidate

    def trial(load_ms: float, query_ms: float) -> Trial:
        t = Trial(Candidate("ort-cpu", "onnx-fp32", "fp32", {}, batch_size=32))
        t.load_ms, t.samples_ms, t.status = load_ms, [query_ms] * 5, "measured"
        return t

    slow = [trial(2000.0, 800.0) for _ in range(4)]  # each round costs > 2 s load + 3 x (2 + 3) x 0.8 s
    search = Search(None, slow, objective="throughput", bound=None, checks=None, shapes={}, budget_s=60.0,
                    progress=None, offset_s=0.0, total_s=60.0)  # type: ignore[arg-type]  # fmt: skip
    search.deadline = time.perf_counter() + 30.0
    kept, per = search._affordable(list(slow))
    assert len(kept) == 2 and kept == slow[:2]  # best first: the last two are dropped
    assert all(t.status.startswith("pruned r0 (time)") for t in slow[2:])
    assert sum(t.round_cost_s(per) for t in kept) <= search.left()
    assert slow[0].round_cost_s(per) >= 2.0 + BLOCKS * 5 * 0.8  # load + warm-up and minimum queries
    fast = [trial(10.0, 1.0) for _ in range(4)]
    search.deadline = time.perf_counter() + 30.0
    assert search._affordable(list(fast))[0] == fast  # cheap candidates all go on


def test_candidate_table_rows_fill_every_column(quantized: Path, tmp_path: Path) -> None:
    from infership.optimize_cli import TRIAL_COLUMNS, trial_row
    from infership.optimizer import optimize

    rep = optimize(_copy(quantized, tmp_path), time_budget_s=3, backends=["ort-cpu"], write=False,
                   max_accuracy_drop=BUDGET_POINTS)  # fmt: skip
    measured = next(t for t in rep.trials if t.to_dict()["p50_ms"] is not None)
    row = dict(zip(TRIAL_COLUMNS, trial_row(measured.to_dict()), strict=True))
    assert row["accuracy"].startswith(("reference", "recorded", "measured")), row
    assert float(row["load ms"]) > 0 and float(row["first ms"]) > 0, row


def test_explain_reports_measured_figures(quantized: Path) -> None:
    from infership.explain import explain

    e = explain(quantized)
    assert e.profiled is not None and e.top_ops
    assert 0.0 < (e.int8_share or 0.0) <= 1.0
    assert abs(sum(o.share for o in e.top_ops) - 1.0) < 0.5
    assert set(e.int8_speedup) <= {"ort-cpu", "openvino"} and e.int8_speedup
    assert all(len(row) >= 1 for row in e.thread_scaling.values())


@pytest.mark.slow
def test_peers_are_measured_interleaved_and_judged(
    template: tuple[Path, Path, object], quantized: Path
) -> None:
    from infership.optimize_checks import AccuracyChecks, held_out_data
    from infership.optimize_space import Candidate
    from infership.peers import compare_peers

    _, data, model = template
    a = Artifact.load(quantized)
    checks = AccuracyChecks(
        a, budget=BUDGET_POINTS, data=held_out_data(a, validation=None, calibration=str(data))
    )
    chosen = Candidate("ort-cpu", "onnx-int8", "int8", {"intra_op_threads": 1})
    rep = compare_peers(a, chosen, objective="latency", checks=checks, calibration=str(data), torch_model=model,
                        blocks=2, block_s=0.1)  # fmt: skip
    names = [p.name for p in rep.peers]
    assert len(names) == 4 and all(p.p50_ms for p in rep.peers), [p.to_dict() for p in rep.peers]
    assert all(p.loss_points is not None for p in rep.peers if p.precision == "int8")
    assert rep.ratio is not None and rep.best_peer in names
    tp = compare_peers(
        a, Candidate("openvino", "openvino-int8", "int8", {"hint": "throughput"}, batch_size=4, concurrency=2),
        objective="throughput", checks=checks, calibration=None, torch_model=None, blocks=1, block_s=0.2,
    )  # fmt: skip
    assert tp.chosen.throughput and tp.batch_size == 4
    eager = next(p for p in tp.peers if p.name == "torch eager fp32")  # the artifact's own torch program
    assert eager.throughput and eager.counts
    int8 = [p for p in tp.peers if p.precision == "int8"]
    assert int8 and all(not p.counts and "no calibration data" in p.note for p in int8)


def test_each_round_of_peer_blocks_starts_one_side_later() -> None:
    """No side always follows the same other side: the order of a round's blocks rotates."""
    from itertools import groupby

    from infership.peers import PeerResult, _interleave, _Side

    calls: list[str] = []
    sides = [_Side(PeerResult(n, "fp32"), lambda _x, n=n: calls.append(n)) for n in "abc"]
    _interleave(sides, [np.zeros(1)], "latency", 1, blocks=3, block_s=0.001)
    blocks = [name for name, _ in groupby(calls)]
    assert blocks[-9:] == list("abcbcacab"), blocks
    assert all(len(s.result.block_speeds) == 3 for s in sides)


def test_openvino_candidates_include_the_batch_compiled_as_fixed(quantized: Path) -> None:
    from infership.optimize_space import candidates

    art = Artifact.load(quantized)
    found = [c for c in candidates(art, objective="throughput", backends=["openvino"], batch_sizes=[1, 8])]
    static = [c for c in found if c.settings.get("extra", {}).get("static_batch")]
    assert static and all(c.settings["extra"]["static_batch"] == c.batch_size for c in static)
    assert len(static) * 2 == len(found), "each OpenVINO setting is measured both ways"
    assert "static" in static[0].describe()
    c = next(c for c in static if c.batch_size == 8)
    x = np.random.default_rng(0).standard_normal((20, *art.manifest.inputs[0].shape[1:])).astype(np.float32)
    with Predictor.load(art, backend="openvino", variant=c.variant, **c.load_options()) as fixed:
        with Predictor.load(art, backend="openvino", variant=c.variant) as dynamic:
            # 20 rows run as 8 + 8 + 4 padded to 8: the same rows as the dynamic model's one call
            a, b = fixed.predict(x), dynamic.predict(x)
            assert a.keys() == b.keys()
            for name in a:
                np.testing.assert_allclose(a[name], b[name], atol=1e-4)
        assert fixed.placement.details["static_batch"] == "8"


def test_onnx_runtimes_own_defaults_are_a_candidate_and_measured_first(quantized: Path) -> None:
    """The raw tool's default session (its thread count, threads pinned to cores) is always among the
    candidates, and each variant's is measured before its other settings."""
    from infership.optimize_space import candidates
    from infership.optimizer import _ordered

    art = Artifact.load(quantized)
    for objective in ("latency", "throughput"):
        found = candidates(art, objective=objective, backends=["ort-cpu"], batch_sizes=[1])
        defaults = [c for c in found if c.settings == {}]
        assert {c.variant for c in defaults} == {c.variant for c in found}, objective
        first = {}
        for c in _ordered(found):
            first.setdefault(c.variant, c)
        assert all(c.settings == {} for c in first.values()), first


def _trial(settings: dict, blocks: list[float], rounds: int = 3) -> Any:
    from infership.optimize_search import Trial
    from infership.optimize_space import Candidate

    t = Trial(Candidate("ort-cpu", "onnx-int8", "int8", settings))
    t.samples_ms = [-b for b in blocks]
    t.block_scores, t.rounds, t.status = list(blocks), rounds, "measured"
    return t


class _AllPass:
    def verdict(self, candidate: Any) -> Any:
        from types import SimpleNamespace

        return SimpleNamespace(ok=True, loss_points=0.0, how="recorded")


def test_the_runtimes_defaults_join_the_leader_and_are_kept_unless_beaten_in_every_block() -> None:
    """A tuned setting replaces the runtime's own defaults only when it was faster in every block of the
    last round; the defaults twin goes on beside the leader (second, so time pruning drops others first)."""
    from infership.optimize_search import Search

    tuned, default, other = _trial({"intra_op_threads": 1}, [-0.030, -0.034, -0.031]), _trial({}, [-0.032, -0.033, -0.033]), _trial({"intra_op_threads": 2}, [-0.05] * 3)  # fmt: skip
    default.status = "pruned r2"
    search = Search(None, [default, tuned, other], objective="latency", bound=None, checks=_AllPass(), shapes={},
                    budget_s=60.0, progress=None, offset_s=0.0, total_s=60.0)  # type: ignore[arg-type]  # fmt: skip
    assert search._with_defaults([tuned, other]) == [tuned, default, other] and default.status == "measured"
    assert default.accuracy == "recorded" and default.loss_points == 0.0  # judged, as the gate does
    assert search._with_defaults([default, other]) == [default, other]  # the leader is the defaults
    # tuned lost the second block: a tie within noise, the defaults stay
    assert search._keep_defaults(tuned) is default and tuned.status.startswith("measured (not faster")
    tuned.block_scores = [-0.030, -0.032, -0.031]  # faster in every block: it replaces the defaults
    assert search._keep_defaults(tuned) is tuned
    default.rounds = 2  # not measured in the same last round: no comparison to make
    tuned.block_scores = [-0.030, -0.034, -0.031]
    assert search._keep_defaults(tuned) is tuned
    rejected = _trial({}, [-0.01] * 3)
    rejected.status = "rejected"
    search.trials = [rejected, tuned]
    assert search._with_defaults([tuned, other]) == [tuned, other]


def test_a_chosen_tuned_setting_beat_the_runtimes_defaults_in_every_block(
    quantized: Path, tmp_path: Path
) -> None:
    """On a real search: whatever ONNX Runtime setting is chosen, either it is the defaults, or the defaults
    were measured in the same last round and lost every block to it."""
    from infership.optimizer import optimize

    art = _copy(quantized, tmp_path)
    report = optimize(art, objective="latency", time_budget_s=20, backends=["ort-cpu"], write=False)
    chosen = report.chosen
    assert chosen is not None and chosen.block_scores
    assert chosen.accuracy in ("reference", "recorded", "measured")  # whichever is chosen was judged
    if chosen.candidate.settings:
        twin = next(t for t in report.trials if t.candidate.key == replace(chosen.candidate, settings={}).key)
        assert twin.rounds == chosen.rounds, (twin.to_dict(), chosen.to_dict())
        assert all(c > d for c, d in zip(chosen.block_scores, twin.block_scores, strict=True))


def test_the_per_tensor_recipe_is_one_more_candidate(quantized: Path) -> None:
    """``quantize_static``'s own recipe (one scale per weight tensor, int8 activations) is made beside the
    per-channel int8 and searched as a variant of its own."""
    from infership.optimize_space import candidates

    art = Artifact.load(quantized)
    steps = {v.id: {s.name: s for s in v.steps} for v in art.manifest.variants}
    tensor = steps["onnx-int8-tensor"]["quantize_static"]
    assert (tensor.params["per_channel"], tensor.params["activation_type"]) == (False, "int8")
    assert tensor.result["per_channel_weights"] == 0
    channel = steps["onnx-int8"]["quantize_static"]
    assert (channel.params["per_channel"], channel.params["activation_type"]) == (True, "uint8")
    found = {c.variant for c in candidates(art, objective="latency", backends=["ort-cpu"])}
    assert {"onnx-fp32", "onnx-int8", "onnx-int8-tensor"} <= found


def test_openvino_int8_from_the_converted_graph_is_one_more_candidate(quantized: Path) -> None:
    """NNCF on the graph ``openvino.convert_model`` makes is a variant of its own, validated within the
    budget like the others and searched beside the int8 made from the ONNX graph."""
    from infership.optimize_space import candidates

    art = Artifact.load(quantized)
    steps = {v.id: {s.name: s for s in v.steps} for v in art.manifest.variants}
    assert steps["openvino-int8-ir"]["nncf.quantize"].params["graph"] == "converted"
    assert steps["openvino-int8"]["nncf.quantize"].params["graph"] == "onnx"
    v = art.manifest.variant("openvino-int8-ir")
    assert (v.format, v.precision, v.validation["passed"]) == ("openvino", "int8", True)
    found = {c.variant for c in candidates(art, objective="latency", backends=["openvino"])}
    assert {"openvino-int8", "openvino-int8-ir"} <= found
    x = np.random.default_rng(1).normal(size=(4, 3, 16, 16)).astype(np.float32)
    with Predictor.load(quantized, backend="openvino", variant="openvino-int8-ir") as p:
        assert p.variant.id == "openvino-int8-ir" and p.predict(x)["logits"].shape == (4, 5)


def test_peer_ratios_pair_the_blocks_measured_back_to_back() -> None:
    """Two identical paths on a machine with slow and fast phases: paired by block their ratio is 1, while
    pooled medians differ by a whole phase when one side gets one block more of the slow phase."""
    from infership.peers import PeerResult

    fast, slow = 1 / 0.030, 1 / 0.040  # 30 and 40 us per call
    a = PeerResult("chosen", "int8", block_speeds=[fast, fast, slow, slow, slow, fast, fast])
    b = PeerResult("peer", "int8", block_speeds=[fast, fast, slow, slow, slow, fast, slow])
    a.samples_ms = [1 / v for v in a.block_speeds]
    b.samples_ms = [1 / v for v in b.block_speeds]
    assert a.ratio_to(b) == pytest.approx(1.0)
    assert b.p50_ms / a.p50_ms == pytest.approx(4 / 3)  # what the pooled medians would have said
    assert a.ratio_to(PeerResult("none", "fp32")) is None
    twice = PeerResult("half as fast", "fp32", block_speeds=[v / 2 for v in a.block_speeds])
    assert a.ratio_to(twice) == pytest.approx(2.0)


def test_bf16_compute_is_searched_only_for_inputs_of_fixed_length(
    quantized: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # OpenVINO's CPU plugin crashed a text encoder's process in bf16 (infership.optimize_space.candidates)
    from infership.convert import build_artifact
    from infership.runtime.hardware import cpu_info
    from infership.runtime.spec import variable_length

    from infership import optimize_space
    from tests.convert.text_models import tiny_bert_folder

    with_bf16 = replace(cpu_info(), flags=(*cpu_info().flags, "avx512_bf16"))
    monkeypatch.setattr(optimize_space, "cpu_info", lambda: with_bf16)
    image = Artifact.load(quantized)
    assert not variable_length(image.manifest.inputs)
    found = optimize_space.candidates(image, objective="latency", backends=["openvino"])
    assert any(c.compute == "bf16" for c in found) and any(c.compute is None for c in found)
    text_root = tmp_path / "text"
    build_artifact(
        f"hf:{tiny_bert_folder(tmp_path / 'hf', seed=3)}",
        text_root,
        fp16=False,
        torch_program=False,
        samples=2,
    )
    text = Artifact.load(text_root)
    assert variable_length(text.manifest.inputs)
    found = optimize_space.candidates(text, objective="latency", backends=["openvino"])
    assert found and all(c.compute is None for c in found)
