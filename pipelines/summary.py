"""Run summaries: counts per output and reason, the conservation check, timings."""

from __future__ import annotations

import json
from collections.abc import Mapping

from rich.console import Console
from rich.table import Table

from transforms.io import join_path, write_text

__all__ = ["ingest_summary", "write_summary", "print_summary"]


def ingest_summary(counts: Mapping, *, job: str, inputs: list[str], out: str, timings: Mapping[str, float], extra: Mapping | None = None) -> dict:
    """The run summary of an ingestion: read = sum(outputs) + dead_letter + duplicates."""
    read = int(counts.get("read", 0))
    dead = int(counts.get("dead_letter", 0))
    duplicates = int(counts.get("duplicates", 0))
    outputs = {k: int(v) for k, v in sorted(counts.get("outputs", {}).items())}
    accounted = sum(outputs.values()) + dead + duplicates
    balance = _stage_balance(counts, read - dead, accounted - dead)
    summary = {
        "job": job,
        "inputs": inputs,
        "out": out,
        "read": read,
        "dead_letter": dead,
        "duplicates": duplicates,
        "outputs": outputs,
        "records": {k: int(v) for k, v in sorted(counts.get("records", {}).items())},
        "reasons": dict(sorted(counts.get("reasons", {}).items(), key=lambda kv: (-kv[1], kv[0]))),
        "flags": dict(sorted(counts.get("flags", {}).items())),
        "conservation": {"ok": accounted == read and not balance.get("lost_at"), "read": read, "accounted": accounted, **balance},
        "timings_secs": {k: round(v, 3) for k, v in timings.items()},
    }
    if "unjoined_events" in counts:
        summary["unjoined_events"] = int(counts["unjoined_events"])
    summary.update(extra or {})
    return summary


def _stage_balance(counts: Mapping, parsed: int, built: int) -> dict:
    """Where rows went missing, when they did: the hand-offs between the ingest's stages.

    ``parsed`` rows (read minus dead letters) must all be staged by the
    parse step, every staged slice and row read back by the build step, and
    every row read back must become an output row or a duplicate (``built``).
    Empty when the counts carry no stage figures.
    """
    stages = counts.get("stages")
    if not stages:
        return {}
    staged, unstaged = int(stages.get("staged_rows", 0)), int(stages.get("unstaged_rows", 0))
    slices = int(stages.get("staged_slices", 0)), int(stages.get("unstaged_slices", 0))
    checks = {
        "parse -> staging (rows)": (parsed, staged),
        "staging -> build (slices)": slices,
        "staging -> build (rows)": (staged, unstaged),
        "build -> outputs + duplicates (rows)": (unstaged, built),
    }
    return {"stages": dict(stages), "lost_at": [f"{name}: {a:,} in, {b:,} out" for name, (a, b) in checks.items() if a != b]}


def write_summary(summary: Mapping, out: str) -> str:
    """Write ``<out>/summary.json`` atomically and return its path."""
    return write_text(json.dumps(summary, indent=2, sort_keys=False, default=str) + "\n", join_path(out, "summary.json"))


def print_summary(summary: Mapping, console: Console | None = None) -> None:
    console = console or Console(stderr=True)
    table = Table(title=f"aisle {summary['job']}: run summary", show_header=True, header_style="bold")
    table.add_column("count")
    table.add_column("records", justify="right")
    table.add_row("read", f"{summary['read']:,}")
    for name, n in summary["outputs"].items():
        table.add_row(f"  -> {name}", f"{n:,}")
    table.add_row("  -> dead letters", f"{summary['dead_letter']:,}")
    table.add_row("  -> duplicates dropped", f"{summary['duplicates']:,}")
    for name, n in summary.get("records", {}).items():
        table.add_row(f"{name} written", f"{n:,}")
    for reason, n in summary.get("reasons", {}).items():
        table.add_row(f"dead letter: {reason}", f"{n:,}")
    for flag, n in summary.get("flags", {}).items():
        table.add_row(f"flagged: {flag}", f"{n:,}")
    if "unjoined_events" in summary:
        table.add_row("events naming unknown products", f"{summary['unjoined_events']:,}")
    console.print(table)
    cons = summary["conservation"]
    mark = "[green]ok[/green]" if cons["ok"] else "[red]MISMATCH[/red]"
    console.print(f"conservation: read {cons['read']:,} = outputs + dead letters + duplicates {cons['accounted']:,}: {mark}")
    for where in cons.get("lost_at", []):
        console.print(f"[red]rows lost between stages[/red]: {where}")
    console.print(f"wall time {summary['timings_secs'].get('total', 0):.1f}s; outputs in {summary['out']}")
