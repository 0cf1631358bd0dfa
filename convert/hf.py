"""Hugging Face models saved on disk (``hf:PATH``): text encoders and classifiers, with their tokenizer.

The folder is what ``save_pretrained`` writes (``config.json``, the weights, the tokenizer files) or a
sentence-transformers model folder (``modules.json``, a ``Pooling`` module, an optional ``Normalize``). It
is loaded with ``transformers``' ``AutoModel`` / ``AutoModelForSequenceClassification`` from the folder
only — never from the network (``local_files_only=True``, and ``HF_HUB_OFFLINE=1`` when ``transformers``
is first imported here).

- ``embedding``: the encoder's last hidden state pooled over the real tokens (``mean``, or the first
  token: ``cls``), L2-normalised unless told otherwise; output ``embedding [batch, hidden]``. A
  sentence-transformers folder says which pooling and whether to normalise; a plain model defaults to mean
  pooling and normalisation.
- ``classification``: the sequence classifier's ``logits [batch, classes]``; class names from the
  config's ``id2label`` when they are not the generic ``LABEL_0``...

The token inputs are ``input_ids``, ``attention_mask`` and, when the model has token types,
``token_type_ids``, all int64 with dynamic ``batch`` and ``sequence`` axes. The tokenizer travels with the
artifact as a ``tokenizers`` JSON file with its settings (:class:`~infership.runtime.manifest.Tokenizer`).
"""

from __future__ import annotations

import enum
import json
import logging
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from infership.runtime import ConversionError, InvalidInputError, Task

log = logging.getLogger(__name__)

#: Scheme of Hugging Face folders in model sources.
HF_SCHEME = "hf:"
#: Longest sequence accepted when neither the tokenizer nor the model says (and no more than the model).
_FALLBACK_MAX_LENGTH = 512
#: What ``model_max_length`` holds when a tokenizer sets no limit.
_UNSET_MAX_LENGTH = 1_000_000
_EXAMPLE_TEXTS = (
    "infership exports text encoders.",
    "A second, somewhat longer example sentence to trace the model with, so the sequence axis stays dynamic.",
)


class Pooling(str, enum.Enum):
    """How token embeddings become one sentence embedding."""

    MEAN = "mean"
    """Mean of the last hidden state over the real (unpadded) tokens."""
    CLS = "cls"
    """The first token's hidden state."""


@dataclass(frozen=True)
class TextModel:
    """What a text model needs beyond its module: its inputs, task, tokenizer and ranges.

    Attributes:
        task: ``embedding`` or ``classification``.
        input_names: Token inputs, in ``forward`` order.
        output_name: ``embedding`` or ``logits``.
        tokenizer_file: A ``tokenizers`` JSON file (in the source folder or a scratch copy).
        max_length: Longest sequence in tokens.
        pad_id: Padding token id.
        pad_token: Padding token text.
        padding_side: ``right`` or ``left``.
        vocab_size: Ids are below it.
        labels: Class names (classification), when the config has real ones.
        pooling: For embeddings: the pooling and whether it normalises, recorded in the load step.
        architecture: ``model_type``, ``num_heads``, ``hidden_size``, ``layers``: what graph optimisers
            need to recognise the model's attention (recorded in the manifest).
        example_texts: Texts to trace the model with.
    """

    task: Task
    input_names: tuple[str, ...]
    output_name: str
    tokenizer_file: Path
    max_length: int
    pad_id: int
    pad_token: str
    padding_side: str
    vocab_size: int
    labels: tuple[str, ...] | None = None
    pooling: dict[str, Any] | None = None
    architecture: dict[str, Any] | None = None
    example_texts: tuple[str, ...] = _EXAMPLE_TEXTS

    @property
    def fields(self) -> dict[str, str]:
        """Input name → tokenizer encoding field (the manifest's ``tokenizer.inputs``)."""
        by_name = {"input_ids": "ids", "attention_mask": "attention_mask", "token_type_ids": "type_ids"}
        return {n: by_name[n] for n in self.input_names}


def is_hf_source(source: Any) -> bool:
    """Whether ``source`` names a Hugging Face folder (``hf:PATH``)."""
    return isinstance(source, str) and source.startswith(HF_SCHEME)


def load_hf(
    spec: str,
    *,
    task: Task | str | None = None,
    pooling: Pooling | str | None = None,
    normalize: bool | None = None,
    max_length: int | None = None,
    scratch: Path | None = None,
) -> tuple[Any, TextModel, dict[str, Any]]:
    """Load ``hf:PATH`` as a torch module ready to export, and what the artifact needs to take text.

    Args:
        spec: ``hf:PATH`` (a local folder).
        task: ``embedding`` (default; Hugging Face's ``feature-extraction`` too) or ``classification``
            (``text-classification``).
        pooling: ``mean`` or ``cls`` (embeddings; default: the sentence-transformers setting, else mean).
        normalize: L2-normalise embeddings (default: the sentence-transformers setting, else True).
        max_length: Longest sequence (default: the smallest of the tokenizer's, sentence-transformers' and
            the model's limits).
        scratch: Where to write a ``tokenizer.json`` when the folder has only a slow tokenizer's files.

    Returns:
        ``(module, text_model, facts)``; facts describe what was read, for the load step.

    Raises:
        ConversionError: The folder is missing, is not a model folder, or ``transformers`` cannot load it
            or make a fast tokenizer for it.
        InvalidInputError: An unknown task or pooling, or a task other than embedding/classification.
    """
    root = Path(spec[len(HF_SCHEME) :]).expanduser()
    if not root.is_dir():
        raise ConversionError(
            f"{spec}: expected a local folder saved with save_pretrained (or a sentence-transformers folder); "
            "models are never downloaded"
        )
    wanted = Task.parse(task) if task is not None else Task.EMBEDDING
    if wanted not in (Task.EMBEDDING, Task.CLASSIFICATION):
        raise InvalidInputError(
            f"hf: sources are embedding or classification models, got task {wanted.value!r}"
        )
    st = _sentence_transformers(root)
    model_dir = root / st.get("transformer_path", "")
    transformers = _import_transformers()
    torch = _import_torch()
    auto = (
        transformers.AutoModelForSequenceClassification
        if wanted is Task.CLASSIFICATION
        else transformers.AutoModel
    )
    try:
        config = transformers.AutoConfig.from_pretrained(model_dir, local_files_only=True)
        try:
            # The plain attention (softmax(QK^T)V written out) exports to the pattern every ONNX toolchain
            # recognises and fuses; fused kernels such as SDPA decompose into one the optimizers do not.
            base = auto.from_pretrained(model_dir, local_files_only=True, attn_implementation="eager")
        except (TypeError, ValueError):  # a model class without the eager choice
            base = auto.from_pretrained(model_dir, local_files_only=True)
    except (OSError, ValueError, KeyError) as exc:
        raise ConversionError(f"{spec}: transformers cannot load the model ({exc})") from exc
    base.eval()
    inputs = _token_inputs(base, config)
    tok_file, tok_facts = _tokenizer_file(model_dir, scratch)
    limit = _max_length(config, tok_facts["model_max_length"], st.get("max_seq_length"), max_length)
    facts: dict[str, Any] = {"folder": str(root), **architecture(config)}
    if st:
        facts["sentence_transformers"] = True
    pool_facts: dict[str, Any] | None = None
    labels = None
    if wanted is Task.EMBEDDING:
        mode = Pooling(pooling) if pooling is not None else Pooling(st.get("pooling", Pooling.MEAN.value))
        norm = normalize if normalize is not None else st.get("normalize", not st)
        pool_facts = {"pooling": mode.value, "normalize": bool(norm)}
        module = _embedding_model(torch, base, mode, bool(norm), "token_type_ids" in inputs)
        output = "embedding"
    else:
        module = _classifier_model(torch, base, "token_type_ids" in inputs)
        output = "logits"
        labels = _labels(config)
    module.eval()
    text = TextModel(
        task=wanted,
        input_names=inputs,
        output_name=output,
        tokenizer_file=tok_file,
        max_length=limit,
        pad_id=tok_facts["pad_id"],
        pad_token=tok_facts["pad_token"],
        padding_side=tok_facts["padding_side"],
        vocab_size=int(getattr(config, "vocab_size", 0) or tok_facts["vocab_size"]),
        labels=labels,
        pooling=pool_facts,
        architecture=architecture(config),
    )
    facts.update(task=wanted.value, max_length=limit, inputs=list(inputs), **(pool_facts or {}))
    return module, text, facts


# ---------------------------------------------------------------------------------------------- modules
# The wrapper classes are made inside functions so that importing this module does not import torch.
def _embedding_model(torch: Any, base: Any, pooling: Pooling, normalize: bool, types: bool) -> Any:
    """The encoder with pooling (and normalisation) in the graph: ``forward(input_ids, attention_mask[,
    token_type_ids]) -> embedding``."""

    class EmbeddingModel(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.encoder = base

        def forward(self, input_ids: Any, attention_mask: Any, token_type_ids: Any = None) -> Any:
            kwargs = {"token_type_ids": token_type_ids} if types else {}
            hidden = self.encoder(input_ids=input_ids, attention_mask=attention_mask, **kwargs)[0]
            if pooling is Pooling.CLS:
                pooled = hidden[:, 0]
            else:
                mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
                pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
            return torch.nn.functional.normalize(pooled, p=2.0, dim=-1) if normalize else pooled

    return EmbeddingModel()


def _classifier_model(torch: Any, base: Any, types: bool) -> Any:
    """The sequence classifier returning its logits only."""

    class ClassifierModel(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.classifier = base

        def forward(self, input_ids: Any, attention_mask: Any, token_type_ids: Any = None) -> Any:
            kwargs = {"token_type_ids": token_type_ids} if types else {}
            return self.classifier(input_ids=input_ids, attention_mask=attention_mask, **kwargs)[0]

    return ClassifierModel()


def _token_inputs(model: Any, config: Any) -> tuple[str, ...]:
    """``input_ids``, ``attention_mask`` and ``token_type_ids`` when the model takes and uses token types
    (a type vocabulary of two or more: BERT does, RoBERTa's single type is always 0)."""
    import inspect

    params = inspect.signature(model.forward).parameters
    names = ["input_ids", "attention_mask"]
    missing = [n for n in names if n not in params]
    if missing:
        raise ConversionError(f"the model's forward takes no {missing}: not a token-input text model")
    if "token_type_ids" in params and int(getattr(config, "type_vocab_size", 0) or 0) > 1:
        names.append("token_type_ids")
    return tuple(names)


def architecture(config: Any) -> dict[str, Any]:
    """The facts of a transformers config that graph optimisers need (absent ones left out)."""
    out = {
        "model_type": getattr(config, "model_type", None),
        "num_heads": getattr(config, "num_attention_heads", None),
        "hidden_size": getattr(config, "hidden_size", None),
        "layers": getattr(config, "num_hidden_layers", None),
    }
    return {k: v for k, v in out.items() if v is not None}


def _labels(config: Any) -> tuple[str, ...] | None:
    id2label = getattr(config, "id2label", None) or {}
    names = tuple(str(id2label[i]) for i in sorted(id2label, key=int))
    generic = all(n == f"LABEL_{i}" for i, n in enumerate(names))
    return None if not names or generic else names


def _max_length(config: Any, tokenizer_max: int | None, st_max: int | None, given: int | None) -> int:
    limits = [n for n in (tokenizer_max, st_max) if n and n < _UNSET_MAX_LENGTH]
    positions = int(getattr(config, "max_position_embeddings", 0) or 0)
    if positions:
        # RoBERTa-style position ids start after the padding index: two positions are not usable.
        offset = 2 if getattr(config, "model_type", "") in ("roberta", "xlm-roberta", "camembert") else 0
        limits.append(positions - offset)
    model_limit = min(limits) if limits else _FALLBACK_MAX_LENGTH
    if given is None:
        return model_limit
    if given < 1 or (positions and given > positions):
        raise InvalidInputError(f"max_length must be in 1..{positions or 'any'}, got {given}")
    return given


# ---------------------------------------------------------------------------------------------- folders
def _read_json(path: Path) -> dict[str, Any]:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ConversionError(f"{path}: not readable JSON ({exc})") from exc


def _sentence_transformers(root: Path) -> dict[str, Any]:
    """Pooling, normalisation, max length and the transformer's subfolder of a sentence-transformers
    folder; ``{}`` for a plain ``save_pretrained`` folder."""
    modules_file = root / "modules.json"
    if not modules_file.is_file():
        return {}
    out: dict[str, Any] = {"normalize": False}
    for module in _read_json(modules_file):
        kind = str(module.get("type", "")).rsplit(".", 1)[-1]
        path = str(module.get("path", ""))
        if kind == "Transformer":
            out["transformer_path"] = path
            cfg = root / path / "sentence_bert_config.json"
            if cfg.is_file():
                out["max_seq_length"] = _read_json(cfg).get("max_seq_length")
        elif kind == "Pooling":
            cfg = _read_json(root / path / "config.json")
            if cfg.get("pooling_mode_cls_token"):
                out["pooling"] = Pooling.CLS.value
            elif cfg.get("pooling_mode_mean_tokens"):
                out["pooling"] = Pooling.MEAN.value
            else:
                modes = sorted(k for k, v in cfg.items() if k.startswith("pooling_mode") and v)
                raise ConversionError(f"{root}: pooling {modes} is not supported (mean or cls)")
        elif kind == "Normalize":
            out["normalize"] = True
        else:
            raise ConversionError(f"{root}: sentence-transformers module {kind!r} is not supported")
    return out


def _tokenizer_file(model_dir: Path, scratch: Path | None) -> tuple[Path, dict[str, Any]]:
    """The folder's ``tokenizer.json`` (made from a slow tokenizer's files when missing) and its settings."""
    cfg_file = model_dir / "tokenizer_config.json"
    cfg = _read_json(cfg_file) if cfg_file.is_file() else {}
    path = model_dir / "tokenizer.json"
    if not path.is_file():
        path = _fast_tokenizer(model_dir, scratch)
    import tokenizers

    try:
        tok = tokenizers.Tokenizer.from_file(str(path))
    except Exception as exc:  # the Rust side raises plain Exception for a bad file: translated here
        raise ConversionError(f"{path}: not a tokenizers JSON file ({exc})") from exc
    pad_token = _token_text(cfg.get("pad_token")) or (tok.padding or {}).get("pad_token") or "[PAD]"
    pad_id = tok.token_to_id(pad_token)
    if pad_id is None:
        raise ConversionError(f"{path}: the padding token {pad_token!r} is not in the vocabulary")
    return path, {
        "model_max_length": cfg.get("model_max_length"),
        "pad_token": pad_token,
        "pad_id": int(pad_id),
        "padding_side": cfg.get("padding_side", "right"),
        "vocab_size": tok.get_vocab_size(with_added_tokens=True),
    }


def _token_text(value: Any) -> str | None:
    if isinstance(value, dict):  # an AddedToken saved as {"content": "[PAD]", ...}
        value = value.get("content")
    return value if isinstance(value, str) else None


def _fast_tokenizer(model_dir: Path, scratch: Path | None) -> Path:
    transformers = _import_transformers()
    try:
        tok = transformers.AutoTokenizer.from_pretrained(model_dir, local_files_only=True, use_fast=True)
    except (OSError, ValueError, KeyError) as exc:
        raise ConversionError(
            f"{model_dir}: no tokenizer.json and no tokenizer to make one from ({exc})"
        ) from exc
    if not getattr(tok, "is_fast", False):
        raise ConversionError(f"{model_dir}: the tokenizer has no fast (tokenizers) version to carry")
    out = Path(tempfile.mkdtemp(prefix="infership-tok-", dir=scratch))
    tok.backend_tokenizer.save(str(out / "tokenizer.json"))
    return out / "tokenizer.json"


def _import_transformers() -> Any:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")  # read when huggingface_hub is first imported
    try:
        import transformers
    except ImportError as exc:
        raise ConversionError("hf: sources need transformers: pip install 'infership[text-export]'") from exc
    return transformers


def _import_torch() -> Any:
    try:
        import torch
    except ImportError as exc:
        raise ConversionError("converting needs PyTorch: pip install 'infership[torch,convert]'") from exc
    return torch
