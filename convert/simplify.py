"""Graph simplification with onnxslim or onnxsim, refusing any result that froze a dynamic dimension.

Simplifiers fold constants and fuse patterns; both have been seen to freeze dynamic dims or crash on some
graphs (onnxsim#101, #206). The result is therefore checked: same inputs and outputs, same ranks, every
symbolic dim still symbolic. Outputs are re-checked against PyTorch by the caller (``build_artifact``).
"""

from __future__ import annotations

import contextlib
import enum
import io
import logging
import os
import time
import warnings
from pathlib import Path
from typing import Any

from infership.runtime import InvalidInputError, Step

log = logging.getLogger(__name__)


class Simplifier(str, enum.Enum):
    """Which graph simplifier to run."""

    AUTO = "auto"
    """onnxslim, then onnxsim if onnxslim fails or is not installed."""
    ONNXSLIM = "onnxslim"
    ONNXSIM = "onnxsim"
    NONE = "none"

    @classmethod
    def parse(cls, value: str | Simplifier) -> Simplifier:
        """``"onnxslim"`` → :attr:`ONNXSLIM`.

        Raises:
            InvalidInputError: An unknown name (the message lists the known ones).
        """
        try:
            return cls(value)
        except ValueError as exc:
            known = ", ".join(m.value for m in cls)
            raise InvalidInputError(f"unknown simplifier {value!r}; expected one of: {known}") from exc


def simplify_onnx(
    src: str | os.PathLike[str], dst: str | os.PathLike[str], *, simplifier: Simplifier = Simplifier.AUTO
) -> tuple[bool, Step]:
    """Simplify ``src`` into ``dst``.

    Never raises for a simplifier failure: the step's result says why nothing was written, and the caller
    keeps ``src``.

    Args:
        src: The ONNX model to simplify.
        dst: Where to write the simplified model (only when it is accepted).
        simplifier: Which tool; ``AUTO`` tries onnxslim then onnxsim.

    Returns:
        ``(written, step)``: whether ``dst`` holds an accepted simplified model, and the ``simplify`` step
        with ``nodes_before``, ``nodes_after``, ``tool`` and, when not written, ``reason``.
    """
    import onnx

    simplifier = Simplifier.parse(simplifier)
    t0 = time.perf_counter()
    src, dst = Path(src), Path(dst)
    model = onnx.load(os.fspath(src))
    before = len(model.graph.node)
    params = {"simplifier": simplifier.value}
    if simplifier is Simplifier.NONE:
        return False, Step(
            "simplify", params, {"applied": False, "reason": "disabled", "nodes_before": before}
        )
    tools = [Simplifier.ONNXSLIM, Simplifier.ONNXSIM] if simplifier is Simplifier.AUTO else [simplifier]
    reasons: list[str] = []
    for tool in tools:
        try:
            simplified = _run_tool(tool, model)
        except _ToolError as exc:
            reasons.append(f"{tool.value}: {exc}")
            log.info("simplifier %s failed: %s", tool.value, exc)
            continue
        problem = _shape_problem(model, simplified)
        if problem:
            reasons.append(f"{tool.value}: {problem}")
            log.warning("simplifier %s result rejected: %s", tool.value, problem)
            continue
        onnx.save(simplified, os.fspath(dst))
        result: dict[str, Any] = {
            "applied": True,
            "tool": tool.value,
            "version": _version(tool),
            "nodes_before": before,
            "nodes_after": len(simplified.graph.node),
        }
        if reasons:
            result["fallback_reason"] = "; ".join(reasons)
        return True, Step("simplify", params, result, round(time.perf_counter() - t0, 3))
    reason = "; ".join(reasons)
    log.warning("graph not simplified, keeping the exported graph: %s", reason)
    result = {"applied": False, "reason": reason, "nodes_before": before, "nodes_after": before}
    return False, Step("simplify", params, result, round(time.perf_counter() - t0, 3))


class _ToolError(Exception):
    pass


def _run_tool(tool: Simplifier, model: Any) -> Any:
    import onnx

    quiet = io.StringIO()
    try:
        with contextlib.redirect_stdout(quiet), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            if tool is Simplifier.ONNXSLIM:
                import onnxslim

                simplified = onnxslim.slim(model)
            else:
                import onnxsim

                simplified, ok = onnxsim.simplify(model)
                if not ok:
                    raise _ToolError("onnxsim's own check of the simplified model failed")
    except ImportError as exc:
        raise _ToolError(f"not installed ({exc.name}); pip install 'infership[convert]'") from exc
    except _ToolError:
        raise
    except Exception as exc:  # simplifiers raise anything from protobuf, onnx and their own code
        raise _ToolError(_one_line(exc)) from exc
    try:
        onnx.checker.check_model(simplified, full_check=True)
    except Exception as exc:  # onnx raises ValidationError, InferenceError, and C++ errors
        raise _ToolError(f"the result is not a valid model ({_one_line(exc)})") from exc
    return simplified


def _one_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0][:300] if text else ''}"


def _io_dims(model: Any) -> dict[str, list[Any]]:
    inits = {i.name for i in model.graph.initializer}
    out = {}
    for vi in [*model.graph.input, *model.graph.output]:
        if vi.name in inits:
            continue
        dims = []
        for d in vi.type.tensor_type.shape.dim:
            dims.append(d.dim_value if d.HasField("dim_value") else (d.dim_param or "?"))
        out[vi.name] = dims
    return out


def _shape_problem(before: Any, after: Any) -> str | None:
    """Why the simplified graph's inputs/outputs are not acceptable, or None."""
    a, b = _io_dims(before), _io_dims(after)
    if list(a) != list(b):
        return f"inputs/outputs changed from {list(a)} to {list(b)}"
    for name, dims in a.items():
        new = b[name]
        if len(dims) != len(new):
            return f"{name}: rank changed from {len(dims)} to {len(new)}"
        for axis, (old, now) in enumerate(zip(dims, new, strict=True)):
            if isinstance(old, str) and not isinstance(now, str):
                return f"{name}: dynamic axis {axis} ({old}) was frozen to {now}"
            if isinstance(old, int) and isinstance(now, int) and old != now:
                return f"{name}: axis {axis} changed from {old} to {now}"
    return None


def _version(tool: Simplifier) -> str | None:
    from importlib import metadata

    try:
        return metadata.version(tool.value)
    except metadata.PackageNotFoundError:
        return None
