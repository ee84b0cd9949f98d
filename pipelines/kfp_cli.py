"""``aisle pipeline``: run the KFP pipelines locally, compile them for Vertex AI, submit and schedule them.

::

    aisle pipeline run training --local [--pipeline-root DIR]      # kfp local runner, this machine
    aisle pipeline run batch --local [--out DIR]
    aisle pipeline compile [--out DIR] [--config dev --project P] [--upload]
    aisle pipeline submit batch --config dev --project P [--schedule "0 3 * * *"]

Settings come from ``config/<env>.yaml`` (``--config``, default ``local``)
with ``--set key=value`` overrides. Compiling imports only kfp; only
:func:`submit_pipeline` imports google.cloud.aiplatform (or uses the
client object it is given).
"""

from __future__ import annotations

import json
import logging
import os
import pathlib
import re
import tempfile
import time
import warnings
from collections.abc import Mapping, Sequence
from typing import Any

import click

from pipelines.config import Config, load_config, require_project
from transforms.errors import ConfigError

__all__ = [
    "batch_arguments",
    "command",
    "compile_all",
    "run_local",
    "submit_pipeline",
    "training_arguments",
]

ROOT = pathlib.Path(__file__).resolve().parents[1]
PIPELINE_NAMES = ("training", "batch")


# ---------------------------------------------------------------------------
# Pipeline arguments from the configuration
# ---------------------------------------------------------------------------


def _local_path(path: str | None) -> str:
    """An absolute path for a local run: relative to the working directory, else to the aisle source tree."""
    if not path or "://" in path or os.path.isabs(path):
        return path or ""
    here = pathlib.Path.cwd() / path
    return str(here.resolve() if here.exists() or not (ROOT / path).exists() else (ROOT / path).resolve())


def _registry(cfg: Config, local: bool) -> dict:
    reg = cfg.registry
    if reg.backend == "local":
        return {"backend": "local", "root": _local_path(reg.root) if local else reg.root}
    return {k: v for k, v in {
        "backend": reg.backend, "project": reg.project, "region": reg.region, "artifact_root": reg.artifact_root,
        "serving_image": reg.serving_image, "deploy_endpoint": reg.deploy_endpoint, "machine_type": reg.machine_type,
    }.items() if v is not None}


def training_arguments(cfg: Config, *, local: bool = False) -> dict:
    """The ``training`` pipeline's parameter values of a configuration."""
    t = cfg.training
    p = _local_path if local else (lambda x: x or "")
    return {
        "events": p(t.events),
        "events_format": t.events_format,
        "ner_train": p(t.ner.train),
        "ner_eval": p(t.ner.eval),
        "ner_base_model": p(t.ner.base_model),
        "ner_epochs": t.ner.epochs,
        "ner_max_steps": t.ner.max_steps or 0,
        "ner_batch_size": t.ner.batch_size,
        "ner_max_length": t.ner.max_length,
        "ner_learning_rate": t.ner.learning_rate,
        "ner_max_train_sentences": t.ner.max_train_sentences or 0,
        "ner_max_eval_sentences": t.ner.max_eval_sentences or 0,
        "ner_candidates": list(t.ner.candidates),
        "ner_max_f1_drop": t.ner.max_f1_drop,
        "ner_latency_budget_ms": t.ner.latency_budget_ms or 0.0,
        "rec_split": t.recommender.split or "",
        "rec_dim": t.recommender.dim,
        "rec_epochs": t.recommender.epochs,
        "rec_candidates": list(t.recommender.candidates),
        "rec_max_drop": t.recommender.max_metric_drop,
        "rec_latency_budget_ms": t.recommender.latency_budget_ms or 0.0,
        "ocr_images": p(t.ocr.images),
        "ocr_candidates": list(t.ocr.candidates),
        "ocr_labelled_pages": p(t.ocr.labelled_pages) if t.ocr.labelled_pages else "",
        "ocr_max_drop": t.ocr.max_agreement_drop,
        "ocr_latency_budget_ms": t.ocr.latency_budget_ms or 0.0,
        "eval_repeats": t.eval_repeats,
        "registry": _registry(cfg, local),
        "promote": t.promote,
        "beam_args": list(cfg.beam.args),
    }


def batch_arguments(cfg: Config, *, local: bool = False) -> dict:
    """The ``batch`` pipeline's parameter values of a configuration."""
    b = cfg.batch
    p = _local_path if local else (lambda x: x or "")
    return {
        "catalog": p(b.catalog),
        "events": p(b.events),
        "out": p(b.out),
        "catalog_format": b.catalog_format,
        "events_format": b.events_format,
        "ocr_model": b.ocr_model,
        "ner_model": b.ner_model,
        "recommender_model": b.recommender_model,
        "registry": _registry(cfg, local),
        "beam_args": list(cfg.beam.args),
    }


ARGUMENTS = {"training": training_arguments, "batch": batch_arguments}
# What a scheduled run passes itself (terraform/modules/scheduler): everything else is a compiled default.
RUN_PARAMETERS = {"training": ("events", "ner_train", "ocr_images"), "batch": ("catalog", "events", "out")}


# ---------------------------------------------------------------------------
# Local runs
# ---------------------------------------------------------------------------

_ANSI = re.compile(r"\x1b\[[0-9;]*m")
_TASK_START = re.compile(r"^Executing task '([^']+)'")
_TASK_END = re.compile(r"^Task '([^']+)' finished with status (\w+)")


class _StepClock(logging.Filter):
    """Records when the local runner starts and finishes each task (a root-logger filter survives its handler swap)."""

    def __init__(self, clock=time.perf_counter):
        super().__init__()
        self.clock = clock
        self.started: dict[str, float] = {}
        self.steps: list[dict] = []

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            msg = _ANSI.sub("", record.getMessage())
        except Exception:  # noqa: BLE001 - never break logging
            return True
        if m := _TASK_START.match(msg):
            self.started[m.group(1)] = self.clock()
        elif m := _TASK_END.match(msg):
            start = self.started.pop(m.group(1), None)
            if start is not None:
                self.steps.append({"step": m.group(1), "status": m.group(2), "seconds": round(self.clock() - start, 2)})
        return True


def run_local(name: str, cfg: Config, *, pipeline_root: str | None = None, arguments: Mapping | None = None) -> dict:
    """Run pipeline ``name`` with kfp's local runner (subprocesses of this Python, no venv, offline).

    Returns ``{"pipeline", "pipeline_root", "out", "seconds", "steps": [{step, name, status, seconds}], "models"}``
    and writes it to ``<pipeline_root>/<name>-summary.json``.
    """
    import kfp.local

    from components.kfp.pipelines import PIPELINES

    if name not in PIPELINES:
        raise ConfigError(f"unknown pipeline {name!r}: choose one of {sorted(PIPELINES)}")
    root = _local_path(pipeline_root or cfg.submit.pipeline_root)
    if "://" in root:
        raise ConfigError(f"a local run needs a local pipeline root, got {root!r}: pass --pipeline-root DIR")
    os.makedirs(root, exist_ok=True)
    args = dict(ARGUMENTS[name](cfg, local=True))
    args.update(arguments or {})
    kfp.local.init(runner=kfp.local.SubprocessRunner(use_venv=False), pipeline_root=root, raise_on_error=True)
    clock = _StepClock()
    logging.getLogger().addFilter(clock)
    t0 = time.perf_counter()
    try:
        with warnings.catch_warnings():
            # the local runner's notes on settings only Vertex uses (display names, the image, resources)
            warnings.filterwarnings("ignore", message=r".*have no effect in the current local runner")
            warnings.filterwarnings("ignore", message=r"You may be attemping to run a task that uses custom")
            PIPELINES[name](**args)
    finally:
        logging.getLogger().removeFilter(clock)
    shown = display_names(name)
    for step in clock.steps:
        step["name"] = shown.get(step["step"], step["step"])
    summary = {"pipeline": name, "pipeline_root": root, "seconds": round(time.perf_counter() - t0, 2), "steps": clock.steps}
    registry = args.get("registry") or {}
    if name == "training":
        summary["out"] = root  # where the run's artifacts (models, reports, metrics) are
        if registry.get("backend") == "local":
            summary["models"] = chosen_models(registry["root"])
    if name == "batch":
        out = args["out"]
        summary["out"] = out
        path = os.path.join(out, "summary_batch.json")
        if os.path.exists(path):
            summary["models"] = json.load(open(path)).get("models")
    with open(os.path.join(root, f"{name}-summary.json"), "w") as fh:
        json.dump(summary, fh, indent=2, default=str)
    return summary


def display_names(name: str) -> dict[str, str]:
    """Task name (``evaluate-2``) -> display name (``evaluate recommender candidates``) of a pipeline."""
    import yaml

    from components.kfp.pipelines import compile_pipeline

    with tempfile.TemporaryDirectory(prefix="aisle-kfp-") as tmp:
        spec = yaml.safe_load(pathlib.Path(compile_pipeline(name, os.path.join(tmp, "p.yaml"))).read_text())
    return {task: body["taskInfo"]["name"] for task, body in spec["root"]["dag"]["tasks"].items()}


def chosen_models(registry_root: str, names: Sequence[str] = ("ner", "recommender", "ocr")) -> dict:
    """The latest registered version of each model: version, chosen candidate, metrics."""
    from components.registry import LocalRegistry

    reg = LocalRegistry(registry_root)
    out = {}
    for name in names:
        version = reg.aliases(name).get("latest")
        if version:
            meta = reg.metadata(name, version)
            out[name] = {
                "version": version,
                "candidate": (meta.get("source") or {}).get("candidate"),
                "framework": meta.get("framework"),
                "aliases": sorted(a for a, v in reg.aliases(name).items() if v == version),
                "metrics": meta.get("metrics"),
            }
    return out


# ---------------------------------------------------------------------------
# Compile and submit
# ---------------------------------------------------------------------------


def compile_all(cfg: Config, out_dir: str, names: Sequence[str] = PIPELINE_NAMES) -> dict[str, str]:
    """Compile each pipeline to ``<out_dir>/<name>.yaml`` with the config's image and parameter defaults."""
    from components.kfp.pipelines import compile_pipeline

    written = {}
    for name in names:
        defaults = {k: v for k, v in ARGUMENTS[name](cfg).items() if k not in RUN_PARAMETERS[name] and "{project}" not in json.dumps(v)}
        written[name] = compile_pipeline(name, os.path.join(out_dir, f"{name}.yaml"), image=cfg.image, parameter_defaults=defaults)
    return written


def upload_templates(paths: Mapping[str, str], templates: str) -> dict[str, str]:
    """Copy compiled YAML files to ``templates`` (the folder the Terraform schedules read)."""
    from apache_beam.io.filesystems import FileSystems

    done = {}
    for name, path in paths.items():
        target = FileSystems.join(templates, f"{name}.yaml")
        with open(path, "rb") as fin, FileSystems.create(target) as fout:
            fout.write(fin.read())
        done[name] = target
    return done


def submit_pipeline(
    name: str,
    template_path: str,
    *,
    project: str,
    region: str,
    pipeline_root: str,
    parameter_values: Mapping[str, Any],
    service_account: str | None = None,
    schedule: str | None = None,
    time_zone: str = "Etc/UTC",
    enable_caching: bool = True,
    display_name: str | None = None,
    labels: Mapping[str, str] | None = None,
    client: Any = None,
):
    """Submit a compiled pipeline to Vertex AI Pipelines, or create a schedule (cron) for it.

    ``client`` is the ``google.cloud.aiplatform`` module or an object with
    its ``init`` and ``PipelineJob``; imported only when none is given.
    Returns the ``PipelineJob`` (submitted) or the ``PipelineJobSchedule``.
    """
    if not pipeline_root.startswith("gs://"):
        raise ConfigError(f"--pipeline-root must be a gs:// folder for Vertex AI, got {pipeline_root!r}")
    if client is None:
        try:
            from google.cloud import aiplatform as client
        except ImportError as exc:  # pragma: no cover - a dependency of aisle
            from transforms.errors import missing_extra

            raise missing_extra("google-cloud-aiplatform", "gcp") from exc
    client.init(project=project, location=region)
    display = display_name or f"aisle-{name}"
    job = client.PipelineJob(
        display_name=display,
        template_path=template_path,
        pipeline_root=pipeline_root,
        parameter_values=dict(parameter_values),
        enable_caching=enable_caching,
        labels=dict(labels or {"app": "aisle", "pipeline": name}),
        project=project,
        location=region,
    )
    if schedule:
        return job.create_schedule(cron=f"TZ={time_zone} {schedule}", display_name=f"{display}-schedule", service_account=service_account)
    job.submit(service_account=service_account)
    return job


# ---------------------------------------------------------------------------
# CLI
# ---------------------------------------------------------------------------


def _config_options(default: str = "local"):
    def decorate(f):
        f = click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE", help="Override a setting, e.g. --set training.ner.epochs=2 (repeatable).")(f)
        f = click.option("--config", "config_name", default=default, show_default=True, help="Environment (local, dev, prod) or a YAML file.")(f)
        return f

    return decorate


def _load(config_name: str, overrides: Sequence[str], **cli) -> Config:
    extra = [f"{k}={v}" for k, v in cli.items() if v is not None]
    return load_config(config_name, [*overrides, *extra])


@click.group()
def command():
    """Kubeflow pipelines: run locally, compile for Vertex AI, submit and schedule."""


@command.command("run")
@click.argument("name", type=click.Choice(PIPELINE_NAMES))
@click.option("--local", is_flag=True, help="Run on this machine with kfp's local runner (the only place `run` runs; see `submit`).")
@click.option("--pipeline-root", default=None, help="Folder for the run's artifacts (default: submit.pipeline_root of the config).")
@click.option("--registry", "registry_root", default=None, help="Local model registry folder (default: registry.root of the config).")
@click.option("--out", default=None, help="batch: the folder outputs are published to (default: batch.out).")
@_config_options("local")
def run_command(name, local, pipeline_root, registry_root, out, config_name, overrides):
    """Run the training or batch pipeline end to end."""
    from rich.console import Console
    from rich.table import Table

    if not local:
        raise click.UsageError("only --local runs happen here; use `aisle pipeline submit` for Vertex AI")
    cfg = _load(config_name, overrides, **{"registry.root": registry_root, "batch.out": out})
    if cfg.registry.backend != "local":
        raise ConfigError(f"a local run needs registry.backend=local (the {cfg.env} config uses {cfg.registry.backend!r}); use --config local")
    summary = run_local(name, cfg, pipeline_root=pipeline_root)
    console = Console(stderr=True)
    table = Table(title=f"{name}: {summary['seconds']:.1f} s (artifacts under {summary['pipeline_root']})")
    table.add_column("step")
    table.add_column("task")
    table.add_column("status")
    table.add_column("seconds", justify="right")
    for s in summary["steps"]:
        table.add_row(s["name"], s["step"], s["status"], f"{s['seconds']:.1f}")
    console.print(table)
    if name == "training":
        models = Table(title=f"registered in {cfg.registry.root}")
        for col in ("model", "version", "chosen candidate", "aliases", "accuracy", "p95 ms", "items/s", "MB"):
            models.add_column(col)
        headline = {"ner": "f1", "recommender": "recall@10", "ocr": "agreement"}
        for model, info in (summary.get("models") or {}).items():
            m = info.get("metrics") or {}
            key = headline.get(model, "")
            models.add_row(
                model, info["version"], str(info["candidate"]), ", ".join(info["aliases"]),
                f"{key}={m[key]:.4g}" if key in m else "", f"{m.get('latency_ms_p95', float('nan')):.1f}",
                f"{m.get('throughput_per_s', float('nan')):.1f}", f"{m.get('size_bytes', float('nan')) / 2**20:.1f}",
            )
        console.print(models)
    else:
        console.print(f"published to {summary.get('out')}; models: {summary.get('models')}")


@command.command("compile")
@click.option("--out", "out_dir", default="out/pipelines", show_default=True, help="Folder for training.yaml and batch.yaml.")
@click.option("--project", default=None, help="Google Cloud project (fills the config's bucket and image names).")
@click.option("--upload", is_flag=True, help="Also copy the YAML files to submit.templates (where the Terraform schedules read them).")
@_config_options("local")
def compile_command(out_dir, project, upload, config_name, overrides):
    """Compile both pipelines to the YAML Vertex AI Pipelines runs."""
    cfg = _load(config_name, overrides, project=project)
    written = compile_all(cfg, out_dir)
    for name, path in written.items():
        click.echo(f"{name}: {path}")
    if upload:
        if not cfg.submit.templates:
            raise ConfigError(f"the {cfg.env} config has no submit.templates folder to upload to")
        require_project(cfg)
        for name, target in upload_templates(written, cfg.submit.templates).items():
            click.echo(f"{name}: uploaded to {target}")


@command.command("submit")
@click.argument("name", type=click.Choice(PIPELINE_NAMES))
@click.option("--project", default=None, help="Google Cloud project.")
@click.option("--region", default=None, help="Vertex AI region (default: the config's region).")
@click.option("--pipeline-root", default=None, help="gs:// folder for run artifacts (default: submit.pipeline_root).")
@click.option("--schedule", default=None, help='Create a schedule with this cron instead of one run, e.g. "0 3 * * *".')
@click.option("--service-account", default=None, help="Service account the run uses (default: submit.service_account).")
@click.option("--param", "params", multiple=True, metavar="NAME=VALUE", help="A pipeline parameter value (repeatable), e.g. --param out=gs://...")
@click.option("--no-caching", is_flag=True, help="Run every step, cached results or not.")
@_config_options("dev")
@click.pass_context
def submit_command(ctx, name, project, region, pipeline_root, schedule, service_account, params, no_caching, config_name, overrides):
    """Submit the training or batch pipeline to Vertex AI Pipelines (once, or on a schedule)."""
    cfg = _load(config_name, overrides, project=project, region=region, **{"submit.pipeline_root": pipeline_root})
    require_project(cfg)
    values = ARGUMENTS[name](cfg)
    for item in params:
        key, sep, value = item.partition("=")
        if not sep or key not in values:
            raise ConfigError(f"--param {item!r}: expected NAME=VALUE with NAME one of {sorted(values)}")
        values[key] = value
    with tempfile.TemporaryDirectory(prefix="aisle-kfp-") as tmp:
        template = compile_all(cfg, tmp, names=[name])[name]
        result = submit_pipeline(
            name,
            template,
            project=cfg.project,
            region=cfg.region,
            pipeline_root=cfg.submit.pipeline_root,
            parameter_values=values,
            service_account=service_account or cfg.submit.service_account,
            schedule=schedule,
            time_zone=cfg.submit.time_zone,
            enable_caching=not no_caching and cfg.submit.enable_caching,
            display_name=f"aisle-{cfg.env}-{name}",
            labels={"app": "aisle", "env": cfg.env, "pipeline": name},
            client=(ctx.obj or {}).get("aiplatform"),  # tests pass a fake; None imports google.cloud.aiplatform
        )
    click.echo(f"submitted {name}: {getattr(result, 'resource_name', result)}")
