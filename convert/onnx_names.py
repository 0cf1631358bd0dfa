"""Naming the outputs of an exported ONNX graph without ever colliding with a name already inside it.

Exporters name graph outputs by renaming the value that produces them. When another value of the graph
already has the requested name (a BERT encoder holds a value ``embedding`` made by its embedding lookup),
the result has two definitions of one name and ONNX Runtime refuses it ("Duplicate definition of name").
So outputs are exported under placeholder names that cannot occur in a traced graph
(:data:`PLACEHOLDER_PREFIX`) and renamed here: an internal value holding a requested name is renamed first
(to a free ``<name>__internal`` name, everywhere it is read, subgraphs included), then each placeholder
gets its requested name.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from typing import Any

from infership.runtime import ConversionError

#: Graph outputs are exported as ``<prefix>0``, ``<prefix>1``... and renamed by :func:`rename_outputs`.
PLACEHOLDER_PREFIX = "infership__output_"


def placeholders(count: int) -> list[str]:
    """The placeholder names of ``count`` outputs."""
    return [f"{PLACEHOLDER_PREFIX}{i}" for i in range(count)]


def rename_outputs(model: Any, names: Sequence[str]) -> dict[str, str]:
    """Give the graph outputs of ``model`` (an ``onnx.ModelProto``, changed in place) the names ``names``.

    Args:
        model: The exported model, its outputs named by :func:`placeholders` (or already as wanted).
        names: One name per graph output, in order.

    Returns:
        Internal values that were renamed to make room, old name → new name (recorded by the export step).

    Raises:
        ConversionError: ``names`` has repeats, or not one name per graph output.
    """
    graph = model.graph
    current = [o.name for o in graph.output]
    if len(names) != len(current):
        raise ConversionError(f"{len(names)} output names given for a graph with {len(current)} outputs")
    if len(set(names)) != len(names):
        dup = sorted({n for n in names if list(names).count(n) > 1})
        raise ConversionError(f"output names must be unique; repeated: {dup}")
    wanted = dict(zip(current, names, strict=True))
    taken = set(_all_names(graph))
    moved: dict[str, str] = {}
    for old, new in wanted.items():
        if old == new or new not in taken:
            continue
        if new in wanted:  # another output holds it now: it gets its own name in this same pass
            continue
        free = _free(f"{new}__internal", taken)
        taken.add(free)
        moved[new] = free
    if moved:
        _rename(graph, moved)
    final = {old: new for old, new in wanted.items() if old != new}
    if final:
        # Two outputs swapping names would collide mid-way: go through unique temporaries.
        temp = {old: _free(f"{old}__renaming", taken) for old in final}
        _rename(graph, temp)
        _rename(graph, {temp[old]: new for old, new in final.items()})
    return moved


def _free(base: str, taken: set[str]) -> str:
    candidate, n = base, 1
    while candidate in taken:
        n += 1
        candidate = f"{base}{n}"
    return candidate


def _graphs(graph: Any) -> Iterator[Any]:
    """``graph`` and every subgraph (If/Loop/Scan bodies) inside it."""
    yield graph
    for node in graph.node:
        for attr in node.attribute:
            if attr.HasField("g"):
                yield from _graphs(attr.g)
            for sub in attr.graphs:
                yield from _graphs(sub)


def _all_names(graph: Any) -> Iterator[str]:
    for g in _graphs(graph):
        yield from (v.name for v in (*g.input, *g.output, *g.value_info))
        yield from (i.name for i in g.initializer)
        for node in g.node:
            yield from node.input
            yield from node.output


def _rename(graph: Any, mapping: Mapping[str, str]) -> None:
    """Rename values everywhere they are defined or read (subgraphs read outer values by name too)."""
    for g in _graphs(graph):
        for v in (*g.input, *g.output, *g.value_info, *g.initializer):
            if v.name in mapping:
                v.name = mapping[v.name]
        for node in g.node:
            for i, name in enumerate(node.input):
                if name in mapping:
                    node.input[i] = mapping[name]
            for i, name in enumerate(node.output):
                if name in mapping:
                    node.output[i] = mapping[name]
