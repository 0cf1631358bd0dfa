"""CLI subcommands of the runtime: ``backends``, ``info``, ``predict``."""

from __future__ import annotations

import argparse
import json
from typing import Any


def add_backends(sub: Any) -> None:
    p = sub.add_parser(
        "backends",
        help="list backends and whether each can run here (and why not)",
        description="List every registered backend, whether it can run on this machine, and the reason if not. "
        "GPU providers that a wheel advertises but cannot run here show as unavailable.",
    )
    p.add_argument("--device", help="check for this device (cpu, cuda, cuda:1, an OpenVINO device)")
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    p.set_defaults(func=_run_backends)


def _run_backends(args: argparse.Namespace) -> int:
    from rich.console import Console
    from rich.table import Table

    from .hardware import cpu_info, nvidia_gpus
    from .registry import backend_status

    rows = backend_status(args.device)
    if args.json:
        print(json.dumps([r.__dict__ for r in rows], indent=2))
        return 0
    cpu = cpu_info()
    gpus = nvidia_gpus()
    console = Console()
    console.print(
        f"CPU: {cpu.model} · {cpu.logical_cores} logical cores · int8: {cpu.int8_support}"
        f" · GPU: {', '.join(g.name for g in gpus) or 'none'}",
        highlight=False,
    )
    table = Table("backend", "available", "details")
    for r in rows:
        table.add_row(
            r.name,
            "[green]yes[/]" if r.available else "[red]no[/]",
            r.description if r.available else r.reason,
        )
    console.print(table)
    return 0


def add_info(sub: Any) -> None:
    p = sub.add_parser(
        "info",
        help="show an artifact's manifest: variants, sizes, steps, validation figures",
        description="Print an artifact's manifest readably. Verifies file hashes unless --no-verify.",
    )
    p.add_argument("artifact", help="artifact directory or .onnx file")
    p.add_argument("--json", action="store_true", help="print the raw manifest JSON")
    p.add_argument("--no-verify", action="store_true", help="skip re-hashing the model files")
    p.set_defaults(func=_run_info)


def _fmt_size(n: int) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024  # type: ignore[assignment]
    return str(n)


def _short(v: Any, limit: int = 160) -> str:
    """``_fmt_value`` cut to ``limit`` characters for tables (``info --json`` has everything)."""
    text = _fmt_value(v)
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _fmt_value(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:.4g}"
    if isinstance(v, dict):
        return ", ".join(f"{k}={_fmt_value(x)}" for k, x in v.items())
    if isinstance(v, list):
        return "[" + ", ".join(_fmt_value(x) for x in v) + "]"
    return str(v)


def _run_info(args: argparse.Namespace) -> int:
    from rich.console import Console
    from rich.markup import escape
    from rich.table import Table

    from .artifact import Artifact
    from .errors import IntegrityError

    art = Artifact.load(args.artifact)
    m = art.manifest
    if args.json:
        print(m.to_json(), end="")
        return 0
    console = Console()
    console.print(
        f"[bold]{m.name}[/]  ({art.root})  schema {m.schema_version}, created {m.created}", highlight=False
    )
    io = Table("", "name", "dtype", "shape", title="inputs / outputs", title_justify="left")
    for kind, specs in (("in", m.inputs), ("out", m.outputs)):
        for s in specs:
            io.add_row(kind, escape(s.name), s.dtype, escape(s.shape_str()))
    console.print(io)
    if m.preprocessing:
        console.print(f"preprocessing: {_fmt_value(m.preprocessing.to_dict())}", highlight=False)
    if m.labels:
        shown = ", ".join(m.labels[:10]) + (" …" if len(m.labels) > 10 else "")
        console.print(f"labels ({len(m.labels)}): {shown}", highlight=False)
    status_ok = True
    vt = Table(
        "variant",
        "format",
        "precision",
        "size",
        "files",
        "integrity",
        "validation",
        title="variants",
        title_justify="left",
    )
    for v in m.variants:
        integrity = "not checked"
        if not args.no_verify:
            try:
                art.verify(v)
                integrity = "[green]ok[/]"
            except IntegrityError as exc:
                integrity, status_ok = f"[red]{exc}[/]", False
        val = v.validation or {}
        summary = {
            k: val[k]
            for k in (
                "passed",
                "backend",
                "execution_precision",
                "max_abs_err",
                "cosine_min",
                "top1_agreement",
                "accuracy",
                "accuracy_drop",
                "sqnr_db",
            )
            if k in val
        }
        vt.add_row(
            v.id,
            v.format,
            v.precision,
            _fmt_size(v.size),
            escape(", ".join(f.path for f in v.files)),
            integrity,
            escape(_short(summary, 240)) or "-",
        )
    console.print(vt)
    for v in m.variants:
        if not v.steps:
            continue
        st = Table("step", "seconds", "params", "result", title=f"steps of {v.id}", title_justify="left")
        for s in v.steps:
            st.add_row(
                s.name,
                f"{s.seconds:.1f}" if s.seconds is not None else "-",
                escape(_short(s.params)),
                escape(_short(s.result)),
            )
        console.print(st)
    for key, title in (("skipped", "variants not made"), ("notes", "notes")):
        items = m.extra.get(key)
        if items:
            console.print(f"[bold]{title}:[/]")
            for item in items if isinstance(items, list) else [items]:
                console.print("  - " + escape(_fmt_value(item)), highlight=False)
    if m.versions:
        console.print("built with: " + ", ".join(f"{k} {v}" for k, v in m.versions.items()), highlight=False)
    return 0 if status_ok else 1
