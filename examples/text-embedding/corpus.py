"""Real English sentences that ship offline: the Python documentation and the docstrings of installed libraries.

Nothing is downloaded. ``python_docs()`` reads the Python reference manual's topic texts that every CPython
carries (``pydoc_data.topics``); ``docstring_sentences(package)`` parses the source files of an installed
package with :mod:`ast` (nothing is imported or run) and splits its docstrings into sentences. Sentences are
cleaned of reStructuredText and code (examples, signatures, parameter tables) and kept when they read like
prose: 6 to 60 words, mostly letters.

Used by the semantic-search example (``search.py``), by ``benchmarks/text_encoder.py`` (calibration and
held-out sentences) and by the library-classifier example (which library's documentation a sentence comes
from).
"""

from __future__ import annotations

import ast
import importlib.util
import random
import re
from collections.abc import Iterable
from pathlib import Path

_ROLE = re.compile(r":[a-z]+:`~?([^`<]*?)(?:\s*<[^>]*>)?`")
_LITERAL = re.compile(r"``([^`]*)``|`([^`]*)`")
_SPLIT = re.compile(r"(?<=[.!?])\s+(?=[A-Z])")
_CODEISH = re.compile(r"[=<>{}\[\]\\|@#$]|\(\)|\b_\w|\w_\w|>>>|\.\.\. ")
_WORD = re.compile(r"[A-Za-z][A-Za-z'-]*")


def _clean(text: str) -> Iterable[str]:
    """Prose sentences from one docstring or documentation text."""
    paragraphs = re.split(r"\n\s*\n", text)
    for para in paragraphs:
        lines = [ln.strip() for ln in para.splitlines()]
        # Section underlines, parameter lists ("x : int"), doctest and directive lines mark non-prose blocks.
        if any(re.fullmatch(r"[-=~^*]{3,}", ln) for ln in lines) or any(
            ln.startswith((">>>", "..", ":param", ":return", "*", "-", "+", "|")) or " : " in ln
            for ln in lines
        ):
            continue
        flat = " ".join(ln for ln in lines if ln)
        flat = _ROLE.sub(lambda m: m.group(1), flat)
        flat = _LITERAL.sub(lambda m: m.group(1) or m.group(2), flat)
        for sentence in _SPLIT.split(flat):
            s = sentence.strip()
            words = s.split()
            if not 6 <= len(words) <= 60 or not s.endswith((".", "?", "!")) or _CODEISH.search(s):
                continue
            letters = sum(len(w) for w in _WORD.findall(s))
            if letters < 0.75 * len(s.replace(" ", "")) or not s.isascii() or not s[0].isupper():
                continue
            yield s


def python_docs() -> list[str]:
    """Sentences of the Python reference manual's topics (``pydoc_data.topics``), in a fixed order."""
    from pydoc_data.topics import topics

    out: list[str] = []
    for key in sorted(topics):
        out.extend(_clean(topics[key]))
    return _unique(out)


def docstring_sentences(package: str, *, limit_files: int = 4000) -> list[str]:
    """Sentences of the docstrings of an installed package's modules, classes and functions.

    Raises:
        ModuleNotFoundError: The package is not installed.
    """
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise ModuleNotFoundError(f"package {package!r} is not installed")
    root = Path(next(iter(spec.submodule_search_locations)))
    out: list[str] = []
    for path in sorted(root.rglob("*.py"))[:limit_files]:
        if "tests" in path.parts or "test" in path.parts:
            continue
        try:
            tree = ast.parse(path.read_text(encoding="utf-8", errors="ignore"))
        except (SyntaxError, ValueError):
            continue
        for node in ast.walk(tree):
            if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
                doc = ast.get_docstring(node)
                if doc:
                    out.extend(_clean(doc))
    return _unique(out)


def labelled(packages: Iterable[str], *, per_package: int, seed: int = 0) -> tuple[list[str], list[int]]:
    """``per_package`` sentences of each package's docstrings (fewer if it has fewer), labelled by package
    index, shuffled deterministically; sentences found in two packages are dropped."""
    names = list(packages)
    pools = {n: docstring_sentences(n) for n in names}
    seen: dict[str, int] = {}
    for pool in pools.values():
        for s in pool:
            seen[s] = seen.get(s, 0) + 1
    rng = random.Random(seed)
    rows: list[tuple[str, int]] = []
    for label, name in enumerate(names):
        pool = [s for s in pools[name] if seen[s] == 1]
        rng.shuffle(pool)
        rows.extend((s, label) for s in pool[:per_package])
    rng.shuffle(rows)
    return [s for s, _ in rows], [lab for _, lab in rows]


def split(sentences: list[str], *, held_out: int, seed: int = 0) -> tuple[list[str], list[str]]:
    """A deterministic (rest, held-out) split of ``sentences``."""
    order = list(range(len(sentences)))
    random.Random(seed).shuffle(order)
    held = [sentences[i] for i in order[:held_out]]
    rest = [sentences[i] for i in order[held_out:]]
    return rest, held


def _unique(items: Iterable[str]) -> list[str]:
    return list(dict.fromkeys(items))


if __name__ == "__main__":  # a look at what the corpus holds
    docs = python_docs()
    print(len(docs), "sentences in the Python docs, e.g.:")
    for s in docs[:: max(1, len(docs) // 8)][:8]:
        print("  ", s)
    for pkg in ("numpy", "torch", "sklearn", "scipy"):
        try:
            print(pkg, len(docstring_sentences(pkg)))
        except ModuleNotFoundError as exc:
            print(exc)
