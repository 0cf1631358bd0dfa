"""The deployment profile and the rule ``Predictor.load(path)`` follows without one: the mechanics.

Whether the rule's choice is fast is measured by ``benchmarks/optimize_suite.py``, not asserted here.
"""

from __future__ import annotations

import logging
import shutil
from dataclasses import replace
from pathlib import Path

import pytest
from infership.runtime import Artifact, ArtifactWriter, Predictor
from infership.runtime.errors import InvalidInputError
from infership.runtime.hardware import cpu_info
from infership.runtime.profile import (
    DEFAULT_BUDGET_POINTS,
    PROFILES_KEY,
    Fingerprint,
    Profile,
    find_profile,
    passed_budget,
    read_profiles,
    usable_cpus,
    with_profile,
)

SUPPORT = cpu_info().int8_support


@pytest.fixture
def art(tiny_artifact: Path, tmp_path: Path) -> Path:
    """A private copy of the tiny artifact (onnx-fp32, torch-fp32, openvino-fp32) to add variants to."""
    dest = tmp_path / "tiny"
    shutil.copytree(tiny_artifact, dest)
    return dest


def _validation(**changes: object) -> dict:
    base = {
        "passed": True,
        "loss_points": 0.2,
        "max_accuracy_drop": 0.5,
        "latency_ms": 0.05,
        "fp32_latency_ms": 0.1,
        "backend": "ort-cpu",
        "int8_outlook": {"int8_support": SUPPORT},
    }
    base.update(changes)
    return {k: v for k, v in base.items() if v is not None}


def _add_int8(root: Path, validation: dict, *, vid: str = "onnx-int8") -> None:
    """An int8-labelled ONNX variant (the fp32 graph: the rule reads records, the runtime runs files)."""
    a = Artifact.load(root)
    w = ArtifactWriter.update(a)
    rel = w.add_file(root / "model.onnx", f"{vid}.onnx", move=False)
    w.put_variant(vid, format="onnx", precision="int8", files=[rel], validation=validation, target="ort-cpu")
    w.commit()


def _store(root: Path, profile: Profile) -> None:
    a = Artifact.load(root)
    w = ArtifactWriter.update(a)
    w.set_manifest(extra=with_profile(a.manifest, profile).extra)
    w.commit()


def _profile(**changes: object) -> Profile:
    base = Profile(
        fingerprint=Fingerprint.current(),
        objective="latency",
        backend="ort-cpu",
        variant="onnx-fp32",
        settings={
            "intra_op_threads": 1,
            "extra": {"session_config": {"session.intra_op.allow_spinning": "0"}},
        },
        figures={"p50_ms": 0.1},
    )
    return replace(base, **changes)


def test_profile_for_this_machine_is_used_with_its_settings(art: Path) -> None:
    _store(art, _profile())
    with Predictor.load(art) as p:
        assert (p.backend, p.variant.id) == ("ort-cpu", "onnx-fp32")
        assert p.options.intra_op_threads == 1
        assert p.options.extra["session_config"] == {"session.intra_op.allow_spinning": "0"}
        assert p.placement.details["selection"] == "from profile"
        assert p.placement.details["profile"]["fingerprint"] == Fingerprint.current().key


def test_profile_of_another_machine_is_ignored_with_a_log_line(art: Path, caplog) -> None:
    here = Fingerprint.current()
    _store(art, _profile(fingerprint=replace(here, cpus=here.cpus + 7)))
    with caplog.at_level(logging.WARNING, logger="infership.runtime.profile"):
        with Predictor.load(art) as p:
            assert p.placement.details.get("selection") != "from profile"
            fixed = p.backend
    assert "another machine" in caplog.text and f"cpus {here.cpus} here, {here.cpus + 7} there" in caplog.text
    with Predictor.load(art, precision="fp32") as p:  # the fixed order, for comparison
        assert p.backend == fixed


def test_fewer_usable_cpus_is_another_machine(art: Path, monkeypatch) -> None:
    _store(art, _profile())
    if usable_cpus() < 2:
        pytest.skip("needs 2 usable CPUs to shrink the share")
    monkeypatch.setenv("OMP_NUM_THREADS", "1")  # what a Ray replica with num_cpus=1 sees
    assert Fingerprint.current().cpus == 1
    with Predictor.load(art) as p:
        assert p.placement.details.get("selection") != "from profile"


def test_explicit_arguments_win_over_the_profile(art: Path) -> None:
    _store(art, _profile(backend="openvino", variant="openvino-fp32", settings={}))
    with Predictor.load(art, backend="ort-cpu") as p:
        assert p.backend == "ort-cpu" and "selection" not in p.placement.details
    with Predictor.load(art, precision="fp32", backend="torch") as p:
        assert p.backend == "torch"
    with Predictor.load(art, variant="onnx-fp32") as p:
        assert p.variant.id == "onnx-fp32" and "selection" not in p.placement.details
    _store(art, _profile())
    with Predictor.load(art, intra_op_threads=2) as p:  # an explicit option beats the profile's setting
        assert p.placement.details["selection"] == "from profile"
        assert p.options.intra_op_threads == 2


def test_throughput_hint_uses_the_throughput_profile(art: Path) -> None:
    _store(art, _profile())
    _store(art, _profile(objective="throughput", backend="openvino", variant="openvino-fp32", batch_size=8,
                         settings={"hint": "throughput", "num_streams": 2}))  # fmt: skip
    assert len(read_profiles(Artifact.load(art).manifest)) == 2
    with Predictor.load(art, hint="throughput") as p:
        assert (p.backend, p.options.num_streams) == ("openvino", 2)
        assert p.placement.details["profile"]["objective"] == "throughput"
    with Predictor.load(art) as p:
        assert p.backend == "ort-cpu"


def test_storing_replaces_the_same_key_and_refuses_unknown_variants(art: Path) -> None:
    m = Artifact.load(art).manifest
    m = with_profile(m, _profile())
    m = with_profile(m, _profile(variant="openvino-fp32", backend="openvino", settings={}))
    assert [p.variant for p in read_profiles(m)] == ["openvino-fp32"]
    with pytest.raises(InvalidInputError, match="not in the artifact"):
        with_profile(m, _profile(variant="nope"))


def test_malformed_profiles_are_skipped_with_a_log_line(art: Path, caplog) -> None:
    a = Artifact.load(art)
    w = ArtifactWriter.update(a)
    w.set_manifest(extra={PROFILES_KEY: [{"objective": "latency"}, _profile().to_dict()]})
    w.commit()
    with caplog.at_level(logging.WARNING, logger="infership.runtime.profile"):
        assert find_profile(Artifact.load(art).manifest) is not None
    assert "skipped" in caplog.text
    with pytest.raises(InvalidInputError):
        _profile(settings={"threads": 3})


def test_rule_prefers_an_int8_variant_that_passed_its_budget(art: Path) -> None:
    _add_int8(art, _validation())
    with Predictor.load(art) as p:
        assert (p.backend, p.variant.id) == ("ort-cpu", "onnx-int8")
        assert p.placement.details["selection"] == "rule: int8"
        assert "passed its accuracy budget" in p.placement.details["selection_reason"]
    with Predictor.load(art, precision="fp32") as p:  # explicit precision wins
        assert p.variant.precision == "fp32"


@pytest.mark.parametrize(
    "validation",
    [
        _validation(passed=False),
        _validation(loss_points=0.8),  # over its own budget of 0.5
        _validation(max_accuracy_drop=None, loss_points=DEFAULT_BUDGET_POINTS + 0.5),  # over the default
        _validation(loss_points=None),  # no loss figure: nothing to judge it by
        _validation(latency_ms=0.2),  # measured slower than fp32
        _validation(int8_outlook={"int8_support": "other-cpu"}),  # measured on another kind of CPU
        _validation(backend="ort-trt"),  # validated on a backend that does not run here
    ],
    ids=["failed", "over-budget", "over-default", "no-loss", "slower", "other-cpu", "other-backend"],
)
def test_rule_leaves_int8_unused_without_evidence(art: Path, validation: dict) -> None:
    _add_int8(art, validation)
    with Predictor.load(art) as p:
        assert p.variant.precision == "fp32"
        assert p.placement.details.get("selection") != "rule: int8"


def test_rule_picks_the_fastest_recorded_int8(art: Path) -> None:
    _add_int8(art, _validation(latency_ms=0.08), vid="onnx-int8")
    _add_int8(art, _validation(latency_ms=0.03, backend="openvino"), vid="onnx-int8-b")
    with Predictor.load(art) as p:
        assert (p.backend, p.variant.id) == ("openvino", "onnx-int8-b")


def test_profile_beats_the_rule_and_a_missing_variant_falls_back_to_it(art: Path) -> None:
    _add_int8(art, _validation())
    _store(art, _profile(variant="openvino-fp32", backend="openvino", settings={"intra_op_threads": 1}))
    with Predictor.load(art) as p:
        assert p.variant.id == "openvino-fp32" and p.placement.details["selection"] == "from profile"
    a = Artifact.load(art)  # a profile naming a variant the artifact no longer has
    stale = _profile(variant="gone").to_dict()
    w = ArtifactWriter.update(a)
    w.set_manifest(extra={PROFILES_KEY: [stale]})
    w.commit()
    with Predictor.load(art) as p:
        assert p.placement.details["selection"] == "rule: int8"


def test_passed_budget_takes_the_stricter_budget() -> None:
    from infership.runtime.manifest import FileEntry, Variant

    f = (FileEntry("m.onnx", "0" * 64, 1),)
    v = Variant("q", "onnx", "int8", f, validation=_validation(loss_points=0.4))
    assert passed_budget(v) and passed_budget(v, 0.4) and not passed_budget(v, 0.3)
    assert not passed_budget(replace(v, precision="fp32"))


def test_fingerprint_round_trips_and_names_differences() -> None:
    here = Fingerprint.current()
    assert (
        Fingerprint.from_dict(here.to_dict()) == here
        and here.key == Fingerprint.from_dict(here.to_dict()).key
    )
    other = replace(here, libraries={**here.libraries, "openvino": "0.0"}, gpus=("H100",))
    diff = " / ".join(here.differences(other))
    assert "openvino" in diff and "gpus none here, H100 there" in diff
    p = _profile()
    assert Profile.from_dict(p.to_dict()) == p


def test_profile_that_cannot_open_falls_back_to_the_fixed_order_with_a_log_line(art: Path, caplog) -> None:
    # ONNX Runtime settings on an OpenVINO choice: refused by the backend, so the fixed order runs.
    _store(art, _profile(variant="openvino-fp32", backend="openvino"))
    with caplog.at_level(logging.WARNING, logger="infership.runtime.selection"):
        with Predictor.load(art) as p:
            assert p.placement.details.get("selection") != "from profile"
    assert "could not open" in caplog.text and "using the fixed order" in caplog.text


def test_rule_never_opens_a_program_this_installation_did_not_build(art: Path, monkeypatch) -> None:
    """A validated torch int8 program built elsewhere is not the rule's to run (it would need trust)."""
    a = Artifact.load(art)
    w = ArtifactWriter.update(a)
    rel = w.add_file(art / "model.pt2", "other.pt2", move=False)
    w.put_variant("torch-int8", format="torch-export", precision="int8", files=[rel],
                  validation=_validation(backend="torch", latency_ms=0.001))  # fmt: skip
    w.commit()
    monkeypatch.setattr(Artifact, "program_trusted", lambda self, v: False)
    with Predictor.load(art) as p:
        assert p.variant.precision == "fp32" and p.placement.details.get("selection") != "rule: int8"
    monkeypatch.undo()
    with Predictor.load(art) as p:  # trusted (this installation wrote it): the rule may open it
        assert (p.backend, p.variant.id) == ("torch", "torch-int8")
