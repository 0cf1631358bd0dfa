"""The Predictor: the one interface production code uses to run an artifact."""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from . import selection
from .artifact import Artifact
from .backend import BackendOptions, PerformanceHint, Placement, Session
from .errors import InferenceError, InvalidInputError
from .preprocess import IMAGE_EXTENSIONS, is_image_like, tensor_to_numpy
from .routing import open_routed
from .selection import BackendFallbackWarning
from .spec import TensorSpec
from .text import LazyTextEncoder, is_text

__all__ = ["BackendFallbackWarning", "Predictor"]

log = logging.getLogger(__name__)

_OPTION_FIELDS = selection.OPTION_FIELDS


def _is_device_tensor(value: Any) -> bool:
    return type(value).__module__.startswith("torch") and getattr(value, "is_cuda", False)


def _check_device_tensor(value: Any, spec: TensorSpec, check_batch: bool, device_index: int) -> Any:
    """Check a torch CUDA tensor against ``spec`` without moving it; returns it contiguous."""
    got_index = value.device.index if value.device.index is not None else 0
    if got_index != device_index:
        raise InvalidInputError(
            f"input {spec.name!r}: the model runs on cuda:{device_index}, the tensor is on cuda:{got_index} "
            "(move it with .to(...); device tensors are bound in place, never copied between GPUs)"
        )
    spec.check_shape(tuple(value.shape), check_batch=check_batch)
    got = str(value.dtype).removeprefix("torch.")
    if got != spec.dtype:
        raise InvalidInputError(
            f"input {spec.name!r}: expected dtype {spec.dtype}, got a CUDA tensor of {got} (device tensors are not cast)"
        )
    return value.contiguous()


def _pad_rows(a: Any, n: int) -> Any:
    """Append ``n`` copies of the last row (numpy array or torch tensor)."""
    if isinstance(a, np.ndarray):
        return np.concatenate([a, np.repeat(a[-1:], n, axis=0)])
    import torch

    return torch.cat([a, a[-1:].expand(n, *a.shape[1:])]).contiguous()


def _shared_dims(specs: Sequence[TensorSpec]) -> tuple[tuple[str, tuple[tuple[str, int], ...]], ...]:
    """Symbolic dimensions that several inputs share (ONNX: one name, one size), with where they sit."""
    where: dict[str, list[tuple[str, int]]] = {}
    for spec in specs:
        for axis, dim in enumerate(spec.shape):
            if isinstance(dim, str):
                where.setdefault(dim, []).append((spec.name, axis))
    return tuple((sym, tuple(places)) for sym, places in where.items() if len(places) > 1)


def _check_shared_dims(
    feeds: Mapping[str, Any], shared: Sequence[tuple[str, Sequence[tuple[str, int]]]]
) -> None:
    for sym, places in shared:
        sizes = [feeds[name].shape[axis] for name, axis in places]
        if any(size != sizes[0] for size in sizes):
            given = ", ".join(
                f"{name} axis {axis}: {size}" for (name, axis), size in zip(places, sizes, strict=True)
            )
            raise InvalidInputError(
                f"inputs that share the dimension {sym!r} must agree on its size; got {given}"
            )


class Predictor:
    """Runs one variant of an artifact on one backend.

    Create with :meth:`load`. ``predict`` takes one array (single-input models) or a mapping
    name → array (numpy arrays or torch tensors, any memory layout) and returns a dict
    output name → numpy array. Thread-safe: one Predictor may be called from many threads.

    Attributes:
        inputs: Input specs (name, dtype, shape with symbolic dims).
        outputs: Output specs.
        backend: Name of the backend actually running the model.
        variant: The artifact variant loaded.
        placement: Where the runtime placed the model (providers/devices, node counts, fallback).
    """

    def __init__(self, artifact: Artifact, opened: selection.Opened) -> None:
        self.artifact = artifact
        #: The options the session was opened with (device, threads, hint, streams...), for the record.
        self.options = opened.options
        self.variant = opened.variant
        self.backend = opened.backend
        self._placement = opened.placement
        self._session = opened.session
        self.inputs: tuple[TensorSpec, ...] = tuple(artifact.manifest.inputs)
        self.outputs: tuple[TensorSpec, ...] = tuple(artifact.manifest.outputs)
        self._input_names = tuple(s.name for s in self.inputs)
        self._input_set = frozenset(self._input_names)
        self._single = self.inputs[0] if len(self.inputs) == 1 else None
        self._shared_dims = _shared_dims(self.inputs)
        self._output_set = frozenset(s.name for s in self.outputs)
        # Outputs whose axis 0 counts detections, not input rows (runtime/detection.py): joined, not sliced.
        self._ragged = frozenset(s.name for s in self.outputs if s.shape[:1] == ("detections",))
        tok = artifact.manifest.tokenizer
        # Strings are text when the artifact carries a tokenizer for all its inputs (loaded on first use).
        self._text = (
            LazyTextEncoder(tok, artifact.root) if tok and set(tok.inputs) == self._input_set else None
        )
        self._chunk = self._chunk_size(opened.session)
        self._device_feeds = opened.session.accepts_device_tensors
        dev = self.options.device or ""
        self._device_index = int(dev.split(":", 1)[1]) if dev.startswith("cuda:") else 0
        self._closed = False

    # ------------------------------------------------------------------ loading
    @classmethod
    def load(
        cls,
        path: str | os.PathLike[str] | Artifact,
        *,
        backend: str = "auto",
        precision: str | None = None,
        device: str | None = None,
        fallback: Sequence[str] | None = None,
        variant: str | None = None,
        max_batch: int | None = None,
        autotune: bool = False,
        extra: Mapping[str, Any] | None = None,
        warmup: int = 0,
        **options: Any,
    ) -> Predictor:
        """Open an artifact directory or a bare ``.onnx`` file on a backend.

        Args:
            path: Artifact directory, ``.onnx`` file, or an :class:`Artifact`.
            backend: A registered backend name, or ``"auto"`` (a fixed order per device; see
                :mod:`infership.runtime.selection` for the rule).
            precision: ``"fp32"`` (the default), ``"fp16"`` or ``"int8"``: which variant to load. With
                ``backend="auto"``, an artifact recording routes for that precision (quantize measured
                which variant is fastest per input length) runs each batch on its length's route.
            device: ``"cpu"``, ``"cuda"``, ``"cuda:N"`` or an OpenVINO device string.
            fallback: Backends to try, in order, if ``backend`` cannot run. Without it, an unavailable
                backend raises — there is never a silent fallback. A used fallback is warned about and
                recorded in :attr:`placement`.
            variant: Load this variant id exactly (overrides ``precision``).
            max_batch: Split batches larger than this into several runs (static-batch models are
                split at their batch size automatically).
            autotune: With ``backend="auto"``: open every eligible backend, time it on this model
                (batch 1, random inputs, median of 20 calls after warm-up) and keep the fastest instead of
                following the fixed order. Costs one load per candidate; the timings are recorded in
                ``placement.details["autotune_ms"]``.
            extra: Backend-specific options (e.g. ``{"trt_max_workspace_size": ...}``); unknown keys
                raise.
            warmup: Run this many calls on representative inputs before returning (first-call
                allocation, kernel selection and compilation happen here instead of in the first
                request); see :func:`infership.runtime.warmup.warmup_inputs` for the inputs used.
            **options: Any field of :class:`BackendOptions`: ``intra_op_threads``, ``inter_op_threads``,
                ``hint`` (``"latency"``/``"throughput"``), ``num_streams``, ``cache_dir``, ``io_binding``.

        Raises:
            ArtifactError: The artifact is missing, malformed, or has no suitable variant.
            IntegrityError: A model file does not match its recorded hash.
            BackendUnavailable: The backend (and every fallback) cannot run here; says why.
            InvalidInputError: An unknown option, a bad ``max_batch`` or ``warmup`` (a ``ValueError``).
        """
        selection.check_max_batch(max_batch)
        if not isinstance(warmup, int) or warmup < 0:
            raise InvalidInputError(f"warmup must be an integer >= 0, got {warmup!r}")
        artifact = path if isinstance(path, Artifact) else Artifact.load(path)
        unknown = set(options) - _OPTION_FIELDS
        if unknown:
            raise InvalidInputError(
                f"unknown option(s) {sorted(unknown)}; expected any of {sorted(_OPTION_FIELDS)} "
                "(backend-specific options go in extra={...})"
            )
        if "hint" in options and not isinstance(options["hint"], PerformanceHint):
            options["hint"] = PerformanceHint(str(options["hint"]).lower())
        if "cache_dir" in options and options["cache_dir"] is not None:
            options["cache_dir"] = Path(options["cache_dir"])
        base = BackendOptions(device=device, extra=dict(extra or {}), **options)
        request = selection.Request(
            backend=backend,
            precision=precision,
            device=device,
            fallback=tuple(fallback or ()),
            variant=variant,
            autotune=autotune,
        )
        # Routes recorded by quantize (each batch to the variant measured fastest for its length) apply
        # when only the precision was asked for; see infership.runtime.routing.
        opened = open_routed(artifact, request, base) or selection.open_best(artifact, request, base)
        predictor = cls(artifact, opened)
        if max_batch is not None:
            static = predictor._session.inputs[0].batch_size if predictor._session.inputs else None
            if static is not None and max_batch < static:
                predictor.close()
                raise InvalidInputError(
                    f"max_batch={max_batch} is smaller than the model's static batch of {static}; "
                    "a static-batch model always runs full batches (omit max_batch)"
                )
            predictor._chunk = static or max_batch
        if warmup:
            from .warmup import run_warmup

            try:
                run_warmup(predictor, warmup)
            except BaseException:
                predictor.close()
                raise
        return predictor

    @staticmethod
    def _chunk_size(session: Session) -> int | None:
        sizes = {s.batch_size for s in session.inputs}
        if len(sizes) == 1:
            (b,) = sizes
            return b or None  # a fixed batch of 0 takes empty batches only: checked as given, never split
        return None

    # ------------------------------------------------------------------ running
    @property
    def placement(self) -> Placement:
        """Where the runtime placed the model, with how it was chosen (fallback, autotune timings)."""
        return self._placement

    @property
    def optimal_concurrency(self) -> int:
        """Calls worth running at once on this Predictor to use the whole device (OpenVINO: its optimal
        number of infer requests, e.g. one per stream under the throughput hint; else 1, one call already
        using every core). The offline benchmark's default number of callers."""
        return max(1, int(getattr(self._session, "optimal_concurrency", 1)))

    @property
    def manifest(self):
        """The artifact's :class:`~infership.runtime.manifest.Manifest`."""
        return self.artifact.manifest

    def predict(self, inputs: Any) -> dict[str, np.ndarray]:
        """Run the model.

        Args:
            inputs: One array for single-input models, or a mapping input name → array. Arrays may be
                numpy arrays or torch tensors of any memory layout; lossless dtype casts are applied.
                If the artifact carries preprocessing, raw images are accepted too: file paths, PIL
                images, HWC uint8 arrays, or a list of them. If it carries a tokenizer, strings are text:
                a string, a pair of strings (cross-encoders), or a list of them, one row each.

        Returns:
            Output name → numpy array, batch-first like the inputs.

        Raises:
            InvalidInputError: Names, rank, dtype or a fixed dimension do not match (the message says
                what was expected and what was given).
            InferenceError: The runtime failed, or returned other outputs than the model declares.
        """
        feeds = self.prepare(inputs)
        out = self._session.run(feeds) if self._chunk is None else self._run_chunked(feeds)
        if out.keys() != self._output_set:  # any backend, third-party ones too: never fewer outputs
            raise InferenceError(
                f"backend {self.backend!r} returned outputs {sorted(map(str, out))}; the model declares "
                f"{sorted(self._output_set)}"
            )
        return out

    __call__ = predict

    def segment(self, images: Any, *, output: str | None = None, unseen: int = 0) -> list[np.ndarray]:
        """Class masks of raw images, one per image at its original size (segmentation artifacts).

        The recorded resize and crop are undone on the class scores (bilinear), then each pixel takes its
        top class; see :func:`infership.runtime.segmentation.segment`.

        Args:
            images: An image or a list: file paths, PIL images, HW/HWC uint8 arrays.
            output: The output holding ``[batch, classes, H, W]`` scores (default: ``out``, else the first).
            unseen: Class of pixels cropped away by the preprocessing.

        Returns:
            A ``[height, width]`` uint8 mask per image (int32 beyond 256 classes).

        Raises:
            InvalidInputError: No recorded preprocessing, an item is not an image, or no class-score output.
        """
        from .segmentation import segment

        return segment(self, images, output=output, unseen=unseen)

    def detect(self, images: Any, *, score_threshold: float = 0.5) -> list[Any]:
        """Detections of raw images, one :class:`~infership.runtime.detection.Detections` per image (detection
        artifacts), boxes in the original image's pixels (the recorded resize and crop undone); see
        :func:`infership.runtime.detection.detect`.

        Args:
            images: An image or a list: file paths, PIL images, HWC uint8 arrays.
            score_threshold: Detections scoring under this are left out.

        Returns:
            Per image: ``boxes [n, 4]`` (``x1, y1, x2, y2``), ``scores [n]``, ``labels [n]``.

        Raises:
            InvalidInputError: Not a detection artifact, no recorded preprocessing, or an unreadable image.
        """
        from .detection import detect

        return detect(self, images, score_threshold=score_threshold)

    def prepare(self, inputs: Any) -> dict[str, np.ndarray]:
        """Check and convert ``inputs`` into feeds exactly as :meth:`predict` does, without running.

        Used by fronts that validate each caller's request on its own before batching several together.

        Args:
            inputs: As for :meth:`predict`.

        Returns:
            Input name → array (or device tensor), of the spec's dtype and contiguous.

        Raises:
            InvalidInputError: As for :meth:`predict`, or the Predictor is closed.
        """
        if self._closed:
            raise InvalidInputError("this Predictor is closed")
        single = self._single
        if single is not None and isinstance(inputs, np.ndarray) and inputs.ndim == single.rank:
            return {single.name: single.check(inputs, check_batch=self._chunk is None)}
        if type(inputs) is dict and inputs.keys() == self._input_set:
            # The common case of a mapping of numpy arrays, checked without the general path's conversions
            # (the same checks: an ndarray needs no conversion, and it is never a device tensor).
            feeds = {}
            for spec in self.inputs:
                value = inputs[spec.name]
                if type(value) is not np.ndarray:
                    break
                feeds[spec.name] = spec.check(value, check_batch=self._chunk is None)
            else:
                if self._shared_dims:
                    _check_shared_dims(feeds, self._shared_dims)
                return feeds
        return self._prepare(inputs)

    async def apredict(self, inputs: Any) -> dict[str, np.ndarray]:
        """:meth:`predict` for asyncio code: the run happens in a worker thread, the event loop stays free.

        The runtimes release the GIL while they compute, so other coroutines (and other ``apredict``
        calls, up to the loop's default executor size) proceed meanwhile.

        Raises:
            InvalidInputError, InferenceError: As for :meth:`predict`.
        """
        return await asyncio.to_thread(self.predict, inputs)

    def _prepare(self, inputs: Any) -> dict[str, np.ndarray]:
        check_batch = self._chunk is None
        if self._text is not None and is_text(inputs):
            # Each call's texts are padded to the longest of them (never to the maximum length).
            tokens = self._text.get().encode(inputs)
            return {spec.name: self._feed(tokens[spec.name], spec, check_batch) for spec in self.inputs}
        if isinstance(inputs, Mapping):
            names = set(inputs)
            if names != self._input_set:
                missing = sorted(self._input_set - names)
                extra = sorted(names - self._input_set)
                raise InvalidInputError(
                    f"expected inputs {list(self._input_names)}, got {sorted(map(str, names))}"
                    + (f"; missing {missing}" if missing else "")
                    + (f"; unexpected {extra}" if extra else "")
                )
            feeds = {spec.name: self._feed(inputs[spec.name], spec, check_batch) for spec in self.inputs}
            if self._shared_dims:
                _check_shared_dims(feeds, self._shared_dims)
            return feeds
        if self._single is None:
            raise InvalidInputError(
                f"this model has {len(self.inputs)} inputs {list(self._input_names)}: pass a mapping name → array, "
                f"got {type(inputs).__name__}"
            )
        spec = self._single
        if self._looks_like_images(inputs, spec):
            return {spec.name: self._images_to_tensor(inputs)}
        return {spec.name: self._feed(inputs, spec, check_batch)}

    def _feed(self, value: Any, spec: TensorSpec, check_batch: bool) -> Any:
        if self._device_feeds and _is_device_tensor(value):
            return _check_device_tensor(value, spec, check_batch, self._device_index)
        return spec.check(self._as_array(value, spec), check_batch=check_batch)

    @staticmethod
    def _as_array(value: Any, spec: TensorSpec) -> np.ndarray:
        value = tensor_to_numpy(value, name=spec.name)
        if isinstance(value, np.ndarray):
            return value
        if isinstance(value, (list, tuple, int, float)):
            try:
                return np.asarray(value)
            except (ValueError, TypeError, OverflowError) as exc:  # ragged lists, ints beyond int64
                raise InvalidInputError(
                    f"input {spec.name!r}: cannot make an array of shape {spec.shape_str()} from the "
                    f"{type(value).__name__} given ({exc})"
                ) from exc
        if isinstance(value, (str, os.PathLike)):
            raise InvalidInputError(
                f"input {spec.name!r}: expected a numpy array or torch tensor of shape {spec.shape_str()}, "
                f"got the string {os.fspath(value)!r} (image files, suffix one of {', '.join(IMAGE_EXTENSIONS)}, "
                "are accepted when the artifact records preprocessing)"
            )
        raise InvalidInputError(
            f"input {spec.name!r}: expected a numpy array or torch tensor of shape {spec.shape_str()} "
            f"and dtype {spec.dtype}, got {type(value).__name__}"
        )

    def _looks_like_images(self, value: Any, spec: TensorSpec) -> bool:
        pre = self.manifest.preprocessing
        if isinstance(value, (list, tuple)) and value:
            return all(is_image_like(v, pre, spec=spec) for v in value)
        return is_image_like(value, pre, spec=spec)

    def _images_to_tensor(self, value: Any) -> np.ndarray:
        from .preprocess import images_to_tensor

        pre = self.manifest.preprocessing
        assert pre is not None
        items: Iterable[Any] = value if isinstance(value, (list, tuple)) else [value]
        workers = self.options.intra_op_threads  # decoded on the model's threads (None: every usable CPU)
        return images_to_tensor(items, pre, self._single, workers=workers)  # type: ignore[arg-type]

    def _run_chunked(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        chunk = self._chunk
        assert chunk is not None
        if any(a.ndim == 0 for a in feeds.values()):
            raise InvalidInputError(
                "batches are split along axis 0, but a scalar input has none (omit max_batch for this model)"
            )
        sizes = {a.shape[0] for a in feeds.values()}
        if len(sizes) != 1:
            raise InvalidInputError(f"all inputs must have the same batch size, got {sorted(sizes)}")
        (n,) = sizes
        static = self._session.inputs[0].batch_size is not None
        if n == chunk or (n < chunk and not static):
            return self._session.run(feeds)
        if n == 0:
            raise InvalidInputError("empty batch: axis 0 has size 0")
        parts: dict[str, list[np.ndarray]] = {}
        for start in range(0, n, chunk):
            stop = min(start + chunk, n)
            piece = {k: a[start:stop] for k, a in feeds.items()}
            real = stop - start
            if static and real < chunk:
                # A static-batch model needs a full batch: pad by repeating the last row, drop it after.
                piece = {k: _pad_rows(a, chunk - real) for k, a in piece.items()}
            out = self._session.run(piece)
            rows = chunk if static else real
            if self._ragged:
                from .detection import offset_run

                out = offset_run(out, start=start, images=real)
            for k, v in out.items():
                if k in self._ragged:
                    parts.setdefault(k, []).append(v)
                    continue
                if v.shape[:1] != (rows,):
                    # Not batch-first (a constant, a pooled summary): splitting would return a wrong answer.
                    raise InferenceError(
                        f"output {k!r} has shape {list(v.shape)} for a run of {rows} rows, not one row per "
                        f"input row, so a batch of {n} cannot be split into runs of {chunk}; pass exactly "
                        f"{chunk} rows" + ("" if static else " or omit max_batch")
                    )
                parts.setdefault(k, []).append(v[:real])
        return {k: np.concatenate(v, axis=0) for k, v in parts.items()}

    # ------------------------------------------------------------------ lifecycle
    def close(self) -> None:
        """Release the runtime session. Further ``predict`` calls raise."""
        if not self._closed:
            self._closed = True
            self._session.close()

    def __enter__(self) -> Predictor:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return (
            f"Predictor({self.manifest.name!r}, backend={self.backend!r}, variant={self.variant.id!r}, "
            f"device={self.placement.device!r})"
        )
