"""ONNX Runtime's transformer optimizer as a conversion step: attention and normalisation fusions.

``onnxruntime.transformers.optimizer`` rewrites the subgraphs of a transformer encoder into ONNX Runtime's
fused CPU/GPU kernels: ``Attention`` (Q/K/V projections, scaled dot product and softmax in one op),
``SkipLayerNormalization`` (residual add + LayerNorm), ``EmbedLayerNormalization`` (the three embeddings +
LayerNorm), ``BiasGelu``/``FastGelu``. The fused graph runs on ONNX Runtime only (the ops live in the
``com.microsoft`` domain), so it is an extra graph next to the portable one, not a replacement:

- ONNX Runtime fp32 and **dynamic** int8 use the fused graph (``quantize_dynamic`` turns ``Attention`` into
  ``QAttention``: one dynamic quantization of the hidden state for Q, K and V together);
- **static** QDQ int8 and OpenVINO/NNCF use the plain graph: fusing before static quantization hides the
  MatMuls and Adds from the quantizer (onnxruntime#8770), and OpenVINO reads standard ops and fuses itself.

The step records the count of each fusion; :func:`fused_ok` says whether anything was fused at all.
"""

from __future__ import annotations

import contextlib
import io
import logging
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from infership.runtime import ConversionError, Step

log = logging.getLogger(__name__)

#: transformers ``model_type`` → the optimizer's model type (those it has fusion rules for).
OPTIMIZER_TYPES = {
    "bert": "bert",
    "roberta": "bert",
    "xlm-roberta": "bert",
    "camembert": "bert",
    "electra": "bert",
    "mpnet": "bert",
    "distilbert": "bert",
    "albert": "bert",
    "deberta": "bert",
    "deberta-v2": "bert",
    "bart": "bart",
    "t5": "t5",
    "gpt2": "gpt2",
    "vit": "vit",
    "clip": "clip",
}
#: The fusions that speed a transformer up (LayerNormalization alone is not one: ONNX has the op).
_KEY_FUSIONS = ("Attention", "MultiHeadAttention", "SkipLayerNormalization", "EmbedLayerNormalization")


def optimize_transformer(src: Path, dst: Path, *, architecture: Mapping[str, Any] | None = None) -> Step:
    """Write ``src`` with ONNX Runtime's transformer fusions applied to ``dst``.

    Args:
        src: The fp32 ONNX graph (standard ops).
        dst: Where the fused graph goes.
        architecture: ``model_type``, ``num_heads``, ``hidden_size`` of the model (the manifest's
            ``extra["text"]["architecture"]``); without them the optimizer guesses from the graph.

    Returns:
        The ``optimize`` step: the optimizer's model type and the count of each fusion made.

    Raises:
        ConversionError: The optimizer failed, or the model type has no fusion rules.
    """
    from onnxruntime.transformers.optimizer import optimize_model

    arch = dict(architecture or {})
    family = OPTIMIZER_TYPES.get(str(arch.get("model_type", "bert")))
    if family is None:
        raise ConversionError(
            f"ONNX Runtime's transformer optimizer has no fusion rules for model type {arch.get('model_type')!r}"
        )
    params = {
        "optimizer_model_type": family,
        "num_heads": int(arch.get("num_heads") or 0),
        "hidden_size": int(arch.get("hidden_size") or 0),
        "opt_level": 0,
    }
    start = time.perf_counter()
    chatter = io.StringIO()  # the optimizer prints and logs its progress; a library must not print
    try:
        with contextlib.redirect_stdout(chatter):
            model = optimize_model(
                str(src),
                model_type=family,
                num_heads=params["num_heads"],
                hidden_size=params["hidden_size"],
                opt_level=0,  # fusions only: ORT's own level-1/2 rewrites happen when a session loads the graph
                use_gpu=False,
            )
            counts = {k: int(v) for k, v in model.get_fused_operator_statistics().items() if v}
            model.save_model_to_file(str(dst))
    except Exception as exc:  # the optimizer raises assertion, key and native errors on graphs it misreads
        raise ConversionError(f"transformer optimizer failed: {type(exc).__name__}: {exc}") from exc
    if chatter.getvalue().strip():
        log.debug("transformer optimizer output:\n%s", chatter.getvalue())
    log.info("transformer fusions: %s", counts)
    return Step("optimize", params, {"fusions": counts}, round(time.perf_counter() - start, 3))


def fused_ok(step: Step) -> bool:
    """Whether the optimizer fused any of the ops that speed a transformer up."""
    fusions = step.result.get("fusions", {})
    return any(fusions.get(k) for k in _KEY_FUSIONS)
