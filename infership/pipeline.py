"""The main job: model → validated artifact → int8 → accuracy → benchmark → report, in one call.

Lives in the facade because it is the one place that composes every area (convert, calibration, bench);
``convert`` itself must not depend on ``bench``.

Every step has a key: a hash of its inputs (the model file's bytes, options, the upstream step's key, the
artifact's variant hashes, the machine fingerprint for timings). ``OUT/pipeline.json`` records the key of
each finished step; re-running with unchanged inputs skips those steps. Each step writes atomically and the
state file is updated after each one, so an interrupted run leaves earlier results intact and the next run
resumes where it stopped.

Output layout::

    OUT/artifact/        the artifact (fp32 ONNX, fp16, OpenVINO IR, int8 variants, torch program)
    OUT/accuracy.json    accuracy of every backend × precision on the held-out data
    OUT/bench.json       benchmark results (infership.bench schema; feed it to ``infership compare``)
    OUT/report/          report.md / report.html with plots, plus the accuracy table
    OUT/pipeline.json    step keys and timings
"""

from __future__ import annotations

import hashlib
import json
import logging
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from infership.convert.int8.types import HOLDOUT_FRACTION
from infership.pipeline_config import PipelineConfig

__all__ = ["PipelineConfig", "PipelineResult", "run_pipeline"]

log = logging.getLogger(__name__)

STATE_NAME = "pipeline.json"
STATE_SCHEMA = 1
STEPS = ("build", "quantize", "accuracy", "bench", "report")

Progress = Callable[[str, str], None]
"""Called as ``progress(step, message)`` when a step starts, is skipped or finishes."""


# ---------------------------------------------------------------------------------------------- state
@dataclass
class PipelineState:
    """Keys and outcomes of the finished steps (``OUT/pipeline.json``)."""

    steps: dict[str, dict[str, Any]] = field(default_factory=dict)

    @classmethod
    def load(cls, out: Path) -> PipelineState:
        path = out / STATE_NAME
        if not path.is_file():
            return cls()
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError) as exc:
            log.warning("ignoring unreadable %s (%s): every step runs again", path, exc)
            return cls()
        if data.get("schema_version") != STATE_SCHEMA:
            return cls()
        return cls(steps=dict(data.get("steps") or {}))

    def done(self, step: str, key: str) -> bool:
        return self.steps.get(step, {}).get("key") == key

    def record(self, out: Path, step: str, key: str, seconds: float, **info: Any) -> None:
        self.steps[step] = {"key": key, "seconds": round(seconds, 2), **info}
        _write_json_atomic(out / STATE_NAME, {"schema_version": STATE_SCHEMA, "steps": self.steps})


def _write_json_atomic(path: Path, data: Any) -> None:
    from infership.runtime.atomic import write_text_atomic

    write_text_atomic(path, json.dumps(data, indent=2, default=str) + "\n")


def _hash(*parts: Any) -> str:
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:20]


def _file_identity(spec: str | None) -> Any:
    """A file's sha256 (or the ``file.py`` part of ``file.py:attr``), else the string itself."""
    if spec is None:
        return None
    from infership.calibration import split_callable

    parts = split_callable(spec)
    path = parts[0] if parts is not None and parts[0].lower().endswith(".py") else spec
    p = Path(path)
    if p.is_file():
        from infership.runtime.artifact import sha256_file

        return {"file": spec, "sha256": sha256_file(p)}
    if p.is_dir():
        return {
            "dir": spec,
            "entries": sorted((q.name, q.stat().st_size) for q in p.rglob("*") if q.is_file()),
        }
    return spec


def _variants_identity(artifact_dir: Path) -> Any:
    from infership.runtime import Artifact

    m = Artifact.load(artifact_dir).manifest
    return sorted((v.id, [f.sha256 for f in v.files]) for v in m.variants)


# ---------------------------------------------------------------------------------------------- result
@dataclass(frozen=True)
class PipelineResult:
    """What the pipeline produced.

    Attributes:
        artifact: The artifact directory.
        rows: One row per backend × precision: accuracy, latency, throughput (see :func:`infership.pipeline_report.summary_rows`).
        skipped: ``(backend/precision, reason)`` for combinations that could not run here.
        report: Path of ``report.md``.
        steps_run: Steps that ran this time; the rest were up to date.
    """

    artifact: Path
    rows: tuple[dict[str, Any], ...]
    skipped: tuple[tuple[str, str], ...]
    report: Path
    steps_run: tuple[str, ...]


def run_pipeline(
    config: PipelineConfig, *, force: bool = False, progress: Progress | None = None
) -> PipelineResult:
    """Run (or resume) the pipeline.

    Args:
        config: What to do.
        force: Run every step even if its key says it is up to date.
        progress: Called with ``(step, message)``.

    Returns:
        The :class:`PipelineResult`.

    Raises:
        ConversionError / ValidationError: Export, conversion or int8 failed its checks (the message has
            the figures; earlier steps' results stay on disk).
        InvalidInputError: Bad configuration or data.
    """
    out = config.output
    out.mkdir(parents=True, exist_ok=True)
    state = PipelineState() if force else PipelineState.load(out)
    say = progress or (lambda step, msg: log.info("%s: %s", step, msg))
    art_dir = out / "artifact"
    ran: list[str] = []

    from infership import __version__

    build_key = _hash(
        "build",
        __version__,
        _file_identity(config.model),
        _file_identity(config.arch),
        config.num_classes,
        config.input_shape,
        config.preprocessing,
        config.task,
        config.labels,
        config.fp16,
        config.openvino,
        _file_identity(config.holdout),  # the build checks compare on its first batches too
    )
    if state.done("build", build_key) and _artifact_ok(art_dir):
        say("build", "up to date")
    else:
        say("build", "export → check against torch → simplify → fp16 → OpenVINO IR")
        t0 = time.perf_counter()
        _step_build(config, art_dir)
        state.record(out, "build", build_key, time.perf_counter() - t0)
        ran.append("build")

    quant_key = _hash(
        "quantize",
        build_key,
        _file_identity(config.calibration),
        _file_identity(config.holdout),
        config.calibration_samples,
        config.method,
        config.int8_targets,
        config.max_accuracy_drop,
    )
    if not config.int8_targets:
        say("quantize", "no int8 targets configured")
    elif config.calibration is None:
        say("quantize", "no calibration data given (calibration = ...): no int8 variants are made")
    elif "build" not in ran and state.done("quantize", quant_key) and _has_int8(art_dir, config.int8_targets):
        # A rebuilt artifact has no int8 variants whatever the key says, hence the "build" check.
        say("quantize", "up to date")
    else:
        say("quantize", f"static int8 for {', '.join(config.int8_targets)} from {config.calibration}")
        t0 = time.perf_counter()
        report = _step_quantize(config, art_dir)
        state.record(out, "quantize", quant_key, time.perf_counter() - t0, targets=report)
        ran.append("quantize")

    from infership.runtime.hardware import fingerprint

    variants = _variants_identity(art_dir)
    acc_key = _hash(
        "accuracy",
        variants,
        _file_identity(config.holdout),
        _file_identity(config.calibration),
        config.backends,
        config.precisions,
    )
    acc_path = out / "accuracy.json"
    if state.done("accuracy", acc_key) and acc_path.is_file():
        say("accuracy", "up to date")
        accuracy = json.loads(acc_path.read_text())
    else:
        say("accuracy", f"every backend × precision on {_holdout_label(config)}")
        t0 = time.perf_counter()
        accuracy = _step_accuracy(config, art_dir)
        _write_json_atomic(acc_path, accuracy)
        state.record(out, "accuracy", acc_key, time.perf_counter() - t0)
        ran.append("accuracy")

    bench_key = _hash(
        "bench",
        variants,
        fingerprint(),
        config.backends,
        config.precisions,
        config.batch_sizes,
        config.scenarios,
        config.duration_s,
    )
    bench_path = out / "bench.json"
    if state.done("bench", bench_key) and bench_path.is_file():
        say("bench", "up to date")
    else:
        say("bench", f"{', '.join(config.scenarios)} · batch {', '.join(map(str, config.batch_sizes))}")
        t0 = time.perf_counter()
        failed = _step_bench(config, art_dir, bench_path)
        if failed:  # results are kept and reported; the step is not marked done, so the next run retries
            say("bench", f"{failed} run(s) failed (see the report): the bench runs again next time")
        else:
            state.record(out, "bench", bench_key, time.perf_counter() - t0)
        ran.append("bench")

    from infership.bench.results import load_results
    from infership.pipeline_report import summary_rows, write_pipeline_report

    results = load_results(bench_path)
    rows, skipped = summary_rows(accuracy, results)
    report_key = _hash("report", acc_key, bench_key)
    report_md = out / "report" / "report.md"
    if "bench" not in ran and state.done("report", report_key) and report_md.is_file():
        say("report", "up to date")
    else:
        t0 = time.perf_counter()
        write_pipeline_report(Path(config.model).name, results, rows, skipped, out / "report")
        state.record(out, "report", report_key, time.perf_counter() - t0)
        ran.append("report")
    return PipelineResult(art_dir, tuple(rows), tuple(skipped), report_md, tuple(ran))


def _has_int8(art_dir: Path, targets: Sequence[str]) -> bool:
    from infership.convert.int8.types import Target
    from infership.runtime import Artifact

    # Only asked when the build step was skipped, i.e. right after _artifact_ok verified every file.
    have = {v.id for v in Artifact.load(art_dir).manifest.variants}
    return all(t.variant_id in have for t in Target.parse(targets))


def _artifact_ok(art_dir: Path) -> bool:
    from infership.runtime import Artifact
    from infership.runtime.errors import ArtifactError

    try:
        Artifact.load(art_dir).verify_all()
    except ArtifactError as exc:
        log.info("artifact at %s needs rebuilding: %s", art_dir, exc)
        return False
    return True


# ---------------------------------------------------------------------------------------------- steps
def _step_build(config: PipelineConfig, art_dir: Path) -> None:
    from infership.convert.build import build_artifact

    build_artifact(
        config.model,
        art_dir,
        arch=config.arch,
        num_classes=config.num_classes,
        input_shapes=[config.input_shape] if config.input_shape else None,
        preprocessing=config.preprocessing,
        task=config.task,
        labels=config.labels,
        fp16=config.fp16,
        openvino=config.openvino,
        # Real inputs for the checks against torch besides random ones (a trained detector finds nothing in
        # noise, so random inputs alone compare no detection).
        validation_data=config.holdout,
        overwrite=True,
    )


def _step_quantize(config: PipelineConfig, art_dir: Path) -> list[dict[str, Any]]:
    from infership.convert.int8 import quantize

    report = quantize(
        art_dir,
        config.calibration,
        targets=config.int8_targets,
        method=config.method,
        samples=config.calibration_samples,
        holdout=config.holdout,
        max_accuracy_drop=config.max_accuracy_drop,
        torch_model=_torch_model_source(config) if "torch" in config.int8_targets else None,
        progress=sys.stderr.isatty(),
    )
    return [_target_summary(t) for t in report.targets]


def _torch_model_source(config: PipelineConfig) -> Any:
    from infership.convert.source import load_model_source

    return load_model_source(config.model, arch=config.arch, num_classes=config.num_classes).model


def _target_summary(t: Any) -> dict[str, Any]:
    d = t.to_dict()
    repair = d.pop("repair", None) or {}
    d["repair_steps"] = len(repair.get("steps", ())) if isinstance(repair, dict) else 0
    return d


def _holdout_label(config: PipelineConfig) -> str:
    if config.holdout is not None:
        return config.holdout
    if config.calibration is not None:
        return f"{HOLDOUT_FRACTION:.0%} split of {config.calibration}"
    return "no held-out data (holdout = ... not given): availability only, accuracy not measured"


def _holdout_set(config: PipelineConfig, art_dir: Path) -> Any:
    from infership.calibration import from_spec
    from infership.runtime import Artifact

    m = Artifact.load(art_dir).manifest
    spec = config.holdout or config.calibration
    if spec is None:
        return None
    cset = from_spec(spec, preprocessing=m.preprocessing, class_names=m.labels)
    if config.holdout is None:
        _, cset = cset.split(1.0 - HOLDOUT_FRACTION)
    # A model with a fixed batch (a detector: one image a run) is fed batches of that size.
    return cset.bind(m.inputs).with_batch_size(m.inputs[0].batch_size or 64)


def _step_accuracy(config: PipelineConfig, art_dir: Path) -> dict[str, Any]:
    """Every backend × precision on the held-out data, judged by the artifact's task: its score against the
    labels (accuracy, for classifiers) and its agreement with torch fp32 (the reference)."""
    import numpy as np

    from infership.runtime import Artifact, Predictor, judge_for
    from infership.runtime.errors import ArtifactError, BackendUnavailable

    judge = judge_for(Artifact.load(art_dir).manifest.task)
    data = _holdout_set(config, art_dir)
    batches = list(data.batches()) if data is not None else []
    labels = np.concatenate([b.labels for b in batches]) if data is not None and data.has_labels else None
    entries: list[dict[str, Any]] = []
    reference: list[dict[str, Any]] | None = None  # torch fp32's outputs, and nothing else
    combos = [("torch", "fp32")] + [
        (b, p) for b in config.backends for p in config.precisions if (b, p) != ("torch", "fp32")
    ]
    for backend, precision in combos:
        if backend == "torch" and precision == "fp16":
            continue  # by design: fp16 variants are ONNX/IR graphs; the torch program is the fp32 reference
        entry: dict[str, Any] = {"backend": backend, "precision": precision}
        try:
            with Predictor.load(art_dir, backend=backend, precision=precision) as p:
                outputs = [p.predict(b.feeds) for b in batches]
                entry["variant"] = p.variant.id
        except (BackendUnavailable, ArtifactError) as exc:
            entry["skipped"] = str(exc).splitlines()[0]
            entries.append(entry)
            continue
        entries.append(entry)
        if not outputs:
            continue
        if (backend, precision) == ("torch", "fp32"):
            reference = outputs
        # Counted on the inputs: a detector's outputs have a row per detection, not per image.
        entry["samples"] = int(sum(b.size for b in batches))
        if reference is not None:
            agreement = judge.compare(reference, outputs)
            entry["vs_torch_fp32"] = {k: v for k, v in agreement.to_dict().items() if k != "outputs"}
            if agreement.top1_agreement is not None:
                entry["agreement_with_torch_fp32"] = round(100.0 * agreement.top1_agreement, 2)
            elif agreement.pixel_agreement is not None:  # segmentation: pixels whose class agrees
                entry["agreement_with_torch_fp32"] = round(100.0 * agreement.pixel_agreement, 2)
            elif agreement.detections_matched is not None:  # detection: detections matched by IoU and label
                entry["agreement_with_torch_fp32"] = round(100.0 * agreement.detections_matched, 2)
        if labels is not None:
            score = judge.score(outputs, labels)
            if score is not None:
                entry["accuracy"] = round(score, 2)
    return {"task": judge.task.value, "holdout": _holdout_label(config), "entries": entries}


def _step_bench(config: PipelineConfig, art_dir: Path, bench_path: Path) -> int:
    """Run the sweep and save it; returns how many runs failed at run time (not merely unavailable)."""
    from infership.bench.harness import BenchConfig, run_sweep
    from infership.bench.results import save_results
    from infership.bench.scenarios import Scenario

    bc = BenchConfig(
        artifact=art_dir,
        backends=config.backends,
        precisions=config.precisions,
        batch_sizes=config.batch_sizes,
        scenarios=tuple(Scenario(s) for s in config.scenarios),
        duration_s=config.duration_s,
    )
    results = _run_with_progress(run_sweep, bc)
    save_results(results, bench_path)
    return sum(1 for s in results.skipped if s.failed)


def _run_with_progress(run_sweep: Callable[..., Any], bc: Any) -> Any:
    if not sys.stderr.isatty():
        return run_sweep(bc)
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    with Progress(
        TextColumn("[bold]bench[/]"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.description}"),
        TimeElapsedColumn(),
        transient=True,
    ) as bar:
        task = bar.add_task("", total=None)

        def tick(done: int, total: int, description: str) -> None:
            bar.update(task, completed=done, total=total, description=description)

        return run_sweep(bc, progress=tick)
