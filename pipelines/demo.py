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

    from pipelines.config import load_config
    from pipelines.kfp_cli import run_local

    cfg = load_config("local", [f"registry.root={out_path / 'registry'}", f"batch.out={out_path / 'batch'}"])
    root = str(out_path / "pipeline_root")
    console.rule("training pipeline (kfp local): ingest -> train NER + recommender -> quantize (OCR too) -> evaluate -> register")
    results["training"] = run_local("training", cfg, pipeline_root=root)
    _print_steps(results["training"], console)
    console.rule("batch pipeline (kfp local): ingest -> enrich (OCR + NER) -> recommend -> publish, with the registered models")
    results["batch"] = run_local("batch", cfg, pipeline_root=root)
    _print_steps(results["batch"], console)
    console.rule(f"done in {time.perf_counter() - t0:.1f}s")
    return results


def _print_steps(run: dict, console: Console) -> None:
    from rich.table import Table

    table = Table(title=f"{run['pipeline']} pipeline: {run['seconds']:.0f}s", header_style="bold")
    table.add_column("step")
    table.add_column("status")
    table.add_column("seconds", justify="right")
    for step in run.get("steps", []):
        table.add_row(str(step.get("name") or step.get("step")), str(step.get("status")), f"{step.get('seconds') or 0:.1f}")
    console.print(table)
    for name, model in (run.get("models") or {}).items():
        console.print(f"model {name}: {model}")


@click.command()
@click.option("--out", default="out/demo", show_default=True, help="Output folder.")
def command(out):
    """Run the whole flow on the bundled sample data and print where the outputs are."""
    results = run_demo(out)
    for stage, summary in results.items():
        click.echo(f"{stage}: {summary['out']}")
