"""Property-based fuzzing of the Predictor's input boundary on every CPU backend.

Every value either runs — with every declared output, the same answer as the canonical input (C-ordered,
native, the spec's dtype) gives, and the caller's array untouched — or is refused with an InfershipError
that is also a ValueError/RuntimeError and says what was expected.
"""

from __future__ import annotations

import warnings

import numpy as np
import pytest

from infership import InfershipError, Predictor

hypothesis = pytest.importorskip("hypothesis")
from hypothesis import given  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

BACKENDS = ["ort-cpu", "torch", pytest.param("openvino", marks=pytest.mark.openvino)]
SHAPE = (3, 16, 16)
NUMPY_DTYPES = [
    "float32", ">f4", "float16", ">f2", "float64", ">f8", "int8", "uint8", "int16", "uint16", "int32",
    "int64", ">i8", "uint64", "bool", "complex64", "object", "datetime64[s]", "U4", "V8",
]  # fmt: skip
TORCH_DTYPES = [
    "float32", "float16", "bfloat16", "float64", "int8", "uint8", "int16", "int32", "int64", "bool",
    "complex64", "float8_e4m3fn", "uint16", "uint32", "uint64",
]  # fmt: skip
LAYOUTS = ["c", "fortran", "strided", "reversed", "transposed", "broadcast", "readonly", "huge-broadcast"]
CONTAINERS = ["ndarray", "mapping", "list", "torch", "wrong-key", "extra-key", "none", "string"]


@pytest.fixture(scope="module", params=BACKENDS)
def predictor(request, tiny_artifact):
    with Predictor.load(tiny_artifact, backend=request.param, extra=_extra(request.param)) as p:
        yield p


def _extra(backend: str) -> dict:
    return {"trust_program": True} if backend == "torch" else {}


@st.composite
def raw_values(draw):
    """A numpy value near the model's input: batch 0..3, sometimes another size or rank, any dtype,
    NaN/Inf, any memory layout."""
    n = draw(st.integers(0, 3))
    shape = [n, *SHAPE]
    mutation = draw(st.sampled_from(["none", "none", "none", "axis", "rank"]))
    if mutation == "axis":
        shape[draw(st.integers(0, 3))] = draw(st.integers(0, 20))
    elif mutation == "rank":
        rank = draw(st.integers(0, 6))
        shape = (shape + [2, 2])[:rank]
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    base = rng.standard_normal(shape)
    fill = draw(st.sampled_from(["normal", "nan", "inf", "mixed", "zeros", "large"]))
    if base.size and fill != "normal":
        flat = base.reshape(-1)
        picks = rng.integers(0, flat.size, max(1, flat.size // 7))
        flat[picks] = {"nan": np.nan, "inf": np.inf, "zeros": 0.0, "large": 1e38}.get(fill, -np.inf)
        if fill == "mixed":
            flat[picks[::2]] = np.nan
    dtype = draw(st.sampled_from(NUMPY_DTYPES))
    with np.errstate(all="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if dtype == "object":
            value = base.astype(object)
        elif dtype == "U4":
            value = base.astype("U4")
        elif dtype == "V8":
            value = np.zeros(shape, "V8")
        elif dtype.startswith("datetime"):
            value = np.nan_to_num(base).astype("int64").astype(dtype)
        else:
            value = base.astype(dtype)
    layout = draw(st.sampled_from(LAYOUTS))
    return _layout(value, layout)


def _layout(value: np.ndarray, layout: str) -> np.ndarray:
    if layout == "fortran":
        return np.asfortranarray(value)
    if layout == "strided" and value.ndim:
        spaced = np.zeros((value.shape[0] * 2, *value.shape[1:]), value.dtype)
        spaced[::2] = value
        return spaced[::2]
    if layout == "reversed" and value.ndim:
        return value[::-1][::-1] if value.shape[0] < 2 else np.flip(np.flip(value, 0).copy(), 0)
    if layout == "transposed" and value.ndim >= 2:
        return np.swapaxes(np.swapaxes(value, 0, 1).copy(), 0, 1)
    if layout == "broadcast" and value.ndim and value.shape[0]:
        return np.broadcast_to(value[:1], (4, *value.shape[1:]))
    if layout == "huge-broadcast" and value.ndim and value.shape[0]:
        return np.broadcast_to(value[:1], (1 << 40, *value.shape[1:]))  # petabytes once copied
    if layout == "readonly":
        value = value.copy()
        value.setflags(write=False)
    return value


@st.composite
def torch_values(draw):
    import torch

    n = draw(st.integers(0, 3))
    shape = [n, *SHAPE]
    if draw(st.booleans()):
        shape[draw(st.integers(0, 3))] = draw(st.integers(1, 5))
    gen = torch.Generator().manual_seed(draw(st.integers(0, 2**31 - 1)))
    base = torch.randn(shape, generator=gen)
    if draw(st.booleans()) and base.numel():
        base.view(-1)[0] = float("nan")
    dtype = getattr(torch, draw(st.sampled_from(TORCH_DTYPES)))
    value = base.to(dtype)
    kind = draw(
        st.sampled_from(["dense", "transposed", "expanded", "huge-expanded", "grad", "sparse", "meta"])
    )
    if kind == "transposed" and value.ndim >= 2:
        value = value.transpose(0, 1).contiguous().transpose(0, 1)
    elif kind == "expanded" and value.shape[0]:
        value = value[:1].expand(3, *value.shape[1:])
    elif kind == "huge-expanded" and value.shape[0]:
        value = value[:1].expand(1 << 40, *value.shape[1:])
    elif kind == "grad" and value.is_floating_point():
        value = value.clone().requires_grad_(True)
    elif kind == "sparse" and value.ndim and dtype in (torch.float32, torch.float64, torch.int64):
        value = value.to_sparse()
    elif kind == "meta":
        value = torch.empty(value.shape, dtype=dtype, device="meta")
    return value


def _container(value, kind: str):
    if kind == "mapping":
        return {"x": value}
    if kind == "list":
        small = isinstance(value, np.ndarray) and value.size < 4000 and max(value.shape, default=0) < 4000
        return value.tolist() if small else value
    if kind == "wrong-key":
        return {"y": value}
    if kind == "extra-key":
        return {"x": value, "z": value}
    if kind == "none":
        return None
    if kind == "string":
        return "x.npy"
    return value


def _as_numpy(value) -> np.ndarray | None:
    if isinstance(value, dict):
        value = value.get("x")
    if type(value).__module__.startswith("torch"):
        try:
            return value.detach().cpu().numpy()
        except (TypeError, RuntimeError, NotImplementedError):  # no numpy form: must be refused
            return None
    if isinstance(value, (list, tuple)):
        return np.asarray(value)
    return value if isinstance(value, np.ndarray) else None


def _check(predictor: Predictor, value, tally, boundary: str) -> None:
    before = _as_numpy(value)
    snapshot = None if before is None or before.size > 100_000 else before.copy()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", UserWarning)  # e.g. torch's non-writable warning: none expected
            out = predictor.predict(value)
    except InfershipError as exc:
        assert isinstance(exc, (ValueError, RuntimeError)), type(exc)
        assert len(str(exc)) > 20, "a refusal says what was expected and what was given"
        tally.add(boundary, type(exc).__name__)
        return
    tally.add(boundary, "accepted")
    assert set(out) == {o.name for o in predictor.outputs}, "every declared output, never fewer"
    assert before is not None
    canonical = np.ascontiguousarray(before, dtype=np.float32)
    want = predictor.predict(canonical)
    for k in want:
        np.testing.assert_array_equal(
            out[k], want[k], err_msg=f"output {k} differs from the canonical input's"
        )
    if snapshot is not None:
        np.testing.assert_array_equal(_as_numpy(value), snapshot, err_msg="the caller's input was modified")


@given(value=raw_values(), container=st.sampled_from(CONTAINERS))
def test_numpy_inputs(predictor, value, container, tally):
    _check(predictor, _container(value, container), tally, f"predictor inputs: numpy ({predictor.backend})")


@given(value=torch_values(), container=st.sampled_from(["tensor", "mapping"]))
def test_torch_inputs(predictor, value, container, tally):
    _check(
        predictor, {"x": value} if container == "mapping" else value, tally, "predictor inputs: torch tensors"
    )


@given(
    n=st.integers(0, 4),
    seed=st.integers(0, 2**32 - 1),
    layouts=st.tuples(st.sampled_from(LAYOUTS[:-1]), st.sampled_from(LAYOUTS[:-1])),
    image=st.sampled_from(["ok", "ok", "other-batch", "wrong-type"]),
    extra=st.one_of(st.none(), st.none(), raw_values()),
    keys=st.one_of(
        st.just(["image", "extra"]),
        st.lists(st.sampled_from(["image", "extra", "zzz", ""]), max_size=4, unique=True),
    ),
)
def test_two_input_mappings(two_io_predictor, n, seed, layouts, image, extra, keys, tally):
    rng = np.random.default_rng(seed)
    image_rows = n + 1 if image == "other-batch" else n
    arrays = {
        "image": _layout(rng.standard_normal((image_rows, 3, 8, 8), dtype=np.float32), layouts[0])
        if image != "wrong-type"
        else "x",
        "extra": extra
        if extra is not None
        else _layout(rng.standard_normal((n, 4), dtype=np.float32), layouts[1]),
        "zzz": np.zeros(2, np.float32),
        "": np.zeros(2, np.float32),
    }
    feeds = {k: arrays[k] for k in keys}
    p = two_io_predictor
    try:
        out = p.predict(feeds)
    except InfershipError as exc:
        assert str(exc)
        tally.add("predictor inputs: mappings", type(exc).__name__)
        return
    tally.add("predictor inputs: mappings", "accepted")
    assert set(out) == {"logits", "embed"}
    want = p.predict({k: np.ascontiguousarray(v, dtype=np.float32) for k, v in feeds.items()})
    for k in want:
        np.testing.assert_array_equal(out[k], want[k])


@pytest.fixture(scope="module")
def two_io_predictor(two_io_artifact):
    with Predictor.load(two_io_artifact, backend="ort-cpu") as p:
        yield p
