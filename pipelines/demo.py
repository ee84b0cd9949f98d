"""``aisle demo``: the whole flow on the sample data that ships in the repository.

No cloud account and no network: the local runner, bundled samples, and
models that ship inside installed packages.
"""

from __future__ import annotations

import pathlib
import time

import click
from rich.console import Console

from pipelines.ingest import run_ingest
from pipelines.summary import print_summary

ROOT = pathlib.Path(__file__).resolve().parents[1]
SAMPLES = ROOT / "samples"


def run_demo(out: str, *, console: Console | None = None) -> dict:
    """Run every stage on the samples; returns {stage: summary}."""
    console = console or Console(stderr=True)
    out_path = pathlib.Path(out)
    results = {}
    t0 = time.perf_counter()
    console.rule("ingest: UCI Online Retail sample -> products, events, cancellations")
    results["ingest"] = run_ingest(
        [str(SAMPLES / "retail" / "online_retail_sample.csv")], str(out_path / "ingest"), format="online-retail", progress=True
    )
    print_summary(results["ingest"], console)
    console.rule(f"done in {time.perf_counter() - t0:.1f}s")
    return results


@click.command()
@click.option("--out", default="out/demo", show_default=True, help="Output folder.")
def command(out):
    """Run the whole flow on the bundled sample data and print where the outputs are."""
    results = run_demo(out)
    for stage, summary in results.items():
        click.echo(f"{stage}: {summary['out']}")
