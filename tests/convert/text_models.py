"""Tiny random-weight text models saved as Hugging Face folders, built in-process (no download).

:func:`tiny_bert_folder` writes what ``save_pretrained`` writes for a 2-layer, 32-wide BERT (config and
safetensors weights) and a real WordPiece ``tokenizer.json`` over a small English vocabulary, so the whole
``hf:PATH`` path — loading, export, tokenizer in the artifact, text in and answers out — runs in seconds.
"""

from __future__ import annotations

import json
import random
from pathlib import Path

WORDS = (
    "the a an and or of to in on for with is are was be this that it as by from at model models text "
    "sentence sentences export exports runtime fast slow small large cat cats dog dogs runs ran sat mat "
    "good bad red blue green one two three four five quick brown fox jumps over lazy hello world "
    "infership encoder encoders token tokens example longer second somewhat trace so stays dynamic axis "
    "library documentation function returns value array numpy python data set train test"
).split()
SPECIAL = ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]")
SENTENCES = (
    "the quick brown fox jumps over the lazy dog",
    "a cat sat on the mat",
    "hello world",
    "this model exports text",
    "the runtime is fast",
    "two dogs ran in the green set",
    "numpy returns an array of data",
    "the library documentation is good",
)


def sentences(n: int, *, seed: int) -> list[str]:
    """``n`` sentences of 2-40 words of the tiny tokenizer's vocabulary, seeded."""
    rng = random.Random(seed)
    return [" ".join(rng.choice(WORDS) for _ in range(rng.randint(2, 40))) for _ in range(n)]


def _tokenizer_json(path: Path) -> int:
    """Write a BERT-style WordPiece tokenizer (lower-casing, [CLS] ... [SEP]); returns the vocabulary size."""
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors

    vocab = {t: i for i, t in enumerate([*SPECIAL, *WORDS, *"abcdefghijklmnopqrstuvwxyz.,"])}
    for c in "abcdefghijklmnopqrstuvwxyz":
        vocab.setdefault(f"##{c}", len(vocab))
    tok = Tokenizer(models.WordPiece(vocab, unk_token="[UNK]", max_input_chars_per_word=100))
    tok.normalizer = normalizers.BertNormalizer(lowercase=True)
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tok.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]",
        pair="[CLS] $A [SEP] $B:1 [SEP]:1",
        special_tokens=[("[CLS]", vocab["[CLS]"]), ("[SEP]", vocab["[SEP]"])],
    )
    tok.decoder = decoders.WordPiece()
    # Saved with fixed-length padding, as many published tokenizer.json files are: the runtime must not use it.
    tok.enable_padding(pad_id=0, pad_token="[PAD]", length=24)
    tok.save(str(path))
    return len(vocab)


def tiny_bert_folder(
    root: Path,
    *,
    classifier: bool = False,
    num_labels: int = 3,
    max_positions: int = 64,
    sentence_transformers: bool = False,
    seed: int = 0,
    outliers: float = 1.0,
) -> Path:
    """A saved tiny BERT (``AutoModel`` or ``AutoModelForSequenceClassification``) with its tokenizer.

    Args:
        root: Folder to write (created).
        classifier: Save a sequence classifier with ``num_labels`` named classes.
        num_labels: Classes of the classifier.
        max_positions: ``max_position_embeddings`` (the longest sequence).
        sentence_transformers: Also write the sentence-transformers files (CLS pooling, Normalize).
        seed: Weight seed.
        outliers: Scale of two hidden channels after each attention block's LayerNorm and of two FFN
            channels (a trained encoder's outlier channels, which one int8 scale per tensor handles badly).
    """
    import torch
    from transformers import BertConfig, BertForSequenceClassification, BertModel

    root.mkdir(parents=True, exist_ok=True)
    vocab_size = _tokenizer_json(root / "tokenizer.json")
    (root / "tokenizer_config.json").write_text(
        json.dumps({"model_max_length": 512, "pad_token": "[PAD]", "tokenizer_class": "BertTokenizer"})
    )
    config = BertConfig(
        vocab_size=vocab_size,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=max_positions,
        id2label={i: f"class_{i}" for i in range(num_labels)},
        label2id={f"class_{i}": i for i in range(num_labels)},
    )
    torch.manual_seed(seed)
    model = (BertForSequenceClassification if classifier else BertModel)(config).eval()
    if outliers != 1.0:
        with torch.no_grad():
            for name, param in model.named_parameters():
                if name.endswith(("attention.output.LayerNorm.weight", "intermediate.dense.weight")):
                    param[:2] *= outliers
    model.save_pretrained(root)
    if sentence_transformers:
        (root / "modules.json").write_text(
            json.dumps(
                [
                    {"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
                    {
                        "idx": 1,
                        "name": "1",
                        "path": "1_Pooling",
                        "type": "sentence_transformers.models.Pooling",
                    },
                    {
                        "idx": 2,
                        "name": "2",
                        "path": "2_Normalize",
                        "type": "sentence_transformers.models.Normalize",
                    },
                ]
            )
        )
        (root / "1_Pooling").mkdir(exist_ok=True)
        (root / "1_Pooling" / "config.json").write_text(
            json.dumps({"word_embedding_dimension": 32, "pooling_mode_cls_token": True})
        )
        (root / "sentence_bert_config.json").write_text(json.dumps({"max_seq_length": 48}))
    return root


def reference_embeddings(folder: Path, texts: list[str], *, pooling: str = "mean", normalize: bool = True):
    """What the model folder computes for ``texts`` in transformers itself (tokenized by transformers)."""
    import torch
    from transformers import AutoModel, PreTrainedTokenizerFast

    tok = PreTrainedTokenizerFast(tokenizer_file=str(folder / "tokenizer.json"), pad_token="[PAD]")
    batch = tok(texts, padding=True, return_tensors="pt")
    model = AutoModel.from_pretrained(folder, local_files_only=True).eval()
    with torch.inference_mode():
        hidden = model(**batch)[0]
    if pooling == "cls":
        pooled = hidden[:, 0]
    else:
        mask = batch["attention_mask"].unsqueeze(-1).float()
        pooled = (hidden * mask).sum(1) / mask.sum(1)
    return (torch.nn.functional.normalize(pooled, dim=-1) if normalize else pooled).numpy()
