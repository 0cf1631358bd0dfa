"""Accuracy for ``infership optimize``: int8 variants made first, held-out data, and the task's judge.

A candidate counts only within the accuracy budget (points of the task's loss,
:attr:`infership.runtime.Agreement.loss_points`). fp32 variants are the reference. An int8 variant whose
recorded validation passed within the budget *on the same backend* counts as validated; anything else
(int8 without such a record, bf16 or fp16 compute) is run on held-out data and judged against the fp32
reference by the artifact's task judge, once per (backend, variant, compute precision).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from infership.runtime import Artifact, Predictor
from infership.runtime.errors import BackendUnavailable, InferenceError, InfershipError, InvalidInputError
from infership.runtime.tasks import judge_for

from .optimize_space import Candidate

log = logging.getLogger(__name__)

#: Held-out samples a candidate is judged on (at most).
VALIDATION_SAMPLES = 256
#: int8 targets made when optimize is given calibration data (torch needs the nn.Module: not made here).
#: What ``optimize --calibration`` makes: per-channel ONNX Runtime int8, ``quantize_static``'s own per-tensor
#: recipe (its graph can be the faster one on a small model), OpenVINO's from the ONNX graph, and OpenVINO's
#: from the graph ``openvino.convert_model`` makes (faster on some models, less accurate on others). Text
#: encoders skip the per-tensor recipe: static per-tensor int8 is far outside any budget on a transformer.
INT8_TARGETS = ("ort", "ort-tensor", "openvino", "openvino-ir")
#: The extra candidates: two repair steps at most each (the main int8 variants get ``quantize``'s default).
EXTRA_TARGETS = ("ort-tensor", "openvino-ir")


@dataclass(frozen=True)
class Verdict:
    """Whether a candidate may be chosen: ``ok``, its loss in points (``None``: not measured), and how it
    was judged (``reference``, ``recorded``, ``measured``) or why it was not."""

    ok: bool
    loss_points: float | None
    how: str


def make_int8(
    root: Any, calibration: str, *, budget: float, targets: Sequence[str] = INT8_TARGETS
) -> list[dict[str, Any]]:
    """Make the int8 variants the artifact lacks, each held to ``budget`` points, one target at a time so
    that one missing its budget does not keep the other out.

    Returns:
        One record per target: ``target``, ``variant``, ``status`` (``exists``, ``made``, ``over budget``,
        ``failed``, ``skipped``) and ``detail``.
    """
    from infership.convert.int8 import AccuracyBudgetError, Target, quantize

    out: list[dict[str, Any]] = []
    text = Artifact.load(root).manifest.tokenizer is not None
    for name in targets:
        target = Target(name)
        have = {v.id for v in Artifact.load(root).manifest.variants}
        rec: dict[str, Any] = {"target": name, "variant": target.variant_id}
        if target.variant_id in have:
            out.append({**rec, "status": "exists", "detail": "already in the artifact"})
            continue
        if target is Target.ORT_TENSOR and text:
            out.append({**rec, "status": "skipped", "detail": "per-tensor static int8 is not tried on text"})
            continue
        # An extra candidate, not the main int8: two repair steps at most, and it leaves the routes by
        # length of a text artifact alone (they were measured between the main variants; the search
        # measures the extra one).
        extra = {"max_repair_steps": 2, "routes": False} if name in EXTRA_TARGETS else {}
        try:
            report = quantize(root, calibration, targets=[target], max_accuracy_drop=budget, **extra)
        except AccuracyBudgetError as exc:
            out.append({**rec, "status": "over budget", "detail": str(exc).split(";")[0]})
            continue
        except InvalidInputError as exc:
            # e.g. a task without a loss figure: int8 cannot be held to a budget, so none is made.
            out.append({**rec, "status": "skipped", "detail": str(exc)})
            break
        except InfershipError as exc:  # a runtime failing to calibrate or quantize this target
            out.append({**rec, "status": "failed", "detail": str(exc)[:300]})
            continue
        loss = report.targets[0].metrics.loss_points if report.targets else None
        out.append({**rec, "status": "made", "detail": f"loss {loss} points", "loss_points": loss})
    return out


def artifact_data(art: Artifact, spec: Any) -> Any:
    """The data source ``spec`` read for ``art`` (images through its preprocessing, texts through its
    tokenizer, class folders mapped to its labels), bound to its inputs."""
    from infership.calibration import from_spec
    from infership.runtime.text import encoder_for

    m = art.manifest
    tokenizer = encoder_for(m, art.root)
    return from_spec(
        str(spec), preprocessing=m.preprocessing, class_names=m.labels, tokenizer=tokenizer
    ).bind(m.inputs)


def held_out_data(
    art: Artifact, *, validation: str | None, calibration: str | None, samples: int = VALIDATION_SAMPLES
) -> Any:
    """The data candidates are judged on: ``validation``, else the held-out part of ``calibration`` (the
    same split ``quantize`` holds out), at most ``samples`` of them; ``None`` without either."""
    spec = validation or calibration
    if spec is None:
        return None
    data = artifact_data(art, spec)
    if validation is None:
        from infership.convert.int8 import HOLDOUT_FRACTION

        data = data.split(1.0 - HOLDOUT_FRACTION)[1]
    return data.sample(samples) if len(data) > samples else data


class AccuracyChecks:
    """Judges candidates against the fp32 reference on held-out data (see the module docstring).

    Args:
        art: The artifact.
        budget: The accuracy budget in points.
        data: A bound :class:`~infership.calibration.CalibrationSet`, or ``None`` (then only recorded
            validations count).
    """

    def __init__(self, art: Artifact, *, budget: float, data: Any) -> None:
        self.art = art
        self.budget = budget
        self.data = data
        self._cache: dict[tuple[str, str, str | None], Verdict] = {}
        self._reference: tuple[list[dict[str, np.ndarray]], np.ndarray | None] | None = None
        self.seconds = 0.0

    def verdict(self, c: Candidate) -> Verdict:
        """Whether ``c`` may be chosen (cached per backend, variant and compute precision)."""
        key = c.accuracy_key
        if key not in self._cache:
            self._cache[key] = self._judge(c)
        return self._cache[key]

    def _judge(self, c: Candidate) -> Verdict:
        v = self.art.manifest.variant(c.variant)
        if v.precision == "fp32" and c.compute is None:
            return Verdict(True, 0.0, "reference")
        val = v.validation or {}
        loss = val.get("loss_points")
        if c.compute is None and val.get("backend") == c.backend and isinstance(loss, (int, float)):
            if val.get("passed") is True and loss <= self.budget:
                return Verdict(True, float(loss), "recorded")
            return Verdict(False, float(loss), f"over budget (recorded loss {loss} > {self.budget} points)")
        if self.data is None:
            return Verdict(False, None, "not validated: no data (give --validation or --calibration)")
        try:
            loss = self._measure(c)
        except (BackendUnavailable, InferenceError, InvalidInputError) as exc:
            return Verdict(False, None, f"not validated: {exc}")
        if loss is None:
            return Verdict(False, None, "not validated: the task gives no loss figure")
        if loss > self.budget:
            return Verdict(False, loss, f"over budget (loss {loss:.2f} > {self.budget} points)")
        return Verdict(True, loss, "measured")

    def reference(self) -> tuple[list[dict[str, np.ndarray]], np.ndarray | None]:
        """The fp32 outputs on the held-out data (ONNX Runtime on the fp32 ONNX variant when there is one)."""
        if self._reference is None:
            fp32 = self.art.manifest.find(formats=("onnx",), precision="fp32")
            kw: dict[str, Any] = {"backend": "ort-cpu", "variant": fp32.id} if fp32 else {"precision": "fp32"}
            with Predictor.load(self.art, **kw) as p:
                outputs, labels = self._run(p)
            judge = judge_for(self.art.manifest.task)
            if labels is not None and judge.score(outputs, labels) is None:
                labels = None
            self._reference = (outputs, labels)
        return self._reference

    def _run(self, p: Predictor) -> tuple[list[dict[str, np.ndarray]], np.ndarray | None]:
        outputs, labels = [], []
        for batch in self.data.batches():
            outputs.append(p.predict(batch.feeds))
            labels.append(batch.labels)
        lab = np.concatenate(labels) if labels and all(x is not None for x in labels) else None
        return outputs, lab

    def _measure(self, c: Candidate) -> float | None:
        import time

        t0 = time.perf_counter()
        ref, labels = self.reference()
        opts = {k: v for k, v in c.load_options().items() if k in ("device", "extra")}
        with Predictor.load(self.art, backend=c.backend, variant=c.variant, **opts) as p:
            outs, _ = self._run(p)
        agreement = judge_for(self.art.manifest.task).compare(ref, outs, labels=labels)
        self.seconds += time.perf_counter() - t0
        log.info("accuracy of %s: loss %s points", c.describe(), agreement.loss_points)
        return agreement.loss_points
