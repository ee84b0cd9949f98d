"""The model registry: versioned, checksummed models with ``latest``/``production`` aliases.

Two backends with one interface, chosen by configuration
(:func:`registry_from_config`):

* :class:`LocalRegistry`: a folder, no cloud. Layout::

      <root>/<name>/<version>/            the model files (a file or a folder tree)
      <root>/<name>/<version>/metadata.json
                                         framework, metrics, source, created time,
                                         sha256 of every file
      <root>/<name>/aliases/<alias>      one line: the version the alias names

  A version folder is written under a temporary name and renamed into
  place, and an alias file is written to a temporary file and switched
  with ``os.replace``, so a reader sees the old or the new state, never a
  half-written one. Versions are ``v1``, ``v2``, ... in registration order.

* :class:`VertexRegistry`: the Vertex AI Model Registry through
  google-cloud-aiplatform (``Model.upload`` with labels and version
  aliases, ``Endpoint`` deploy for online serving). The files and their
  ``metadata.json`` go to ``artifact_root`` (the models bucket) first; the
  aiplatform module is a constructor argument, so tests pass a fake.

A model reference is ``name``, ``name@alias`` or ``name@version``
(``ner@production``, ``ner@v3``); as a URI in job options it is
``registry://ner@production`` or ``models:/ner@production``.
:func:`resolve_model_uri` turns such a URI into a concrete, checksummed
version when a batch job is launched, and returns what the job records in
its run summary::

    path, info = resolve_model_uri("registry://ner@production", LocalRegistry("out/registry"))
    # path: out/registry/ner/v3   info["version"]: "v3"   info["sha256"]: {"model.onnx": "..."}

Plain paths (``/models/ner``, ``gs://bucket/ner``) pass through unchanged.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import json
import os
import re
import shutil
import tempfile
import uuid
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from transforms.errors import ChecksumMismatch, ConfigError, ModelLoadError

__all__ = [
    "ALIASES",
    "LocalRegistry",
    "ModelRef",
    "ResolvedModel",
    "VertexRegistry",
    "file_checksums",
    "is_registry_uri",
    "parse_model_ref",
    "registry_from_config",
    "resolve_model_uri",
]

ALIASES = ("latest", "production")
METADATA_FILE = "metadata.json"
URI_PREFIXES = ("registry://", "models:/")
_NAME = re.compile(r"^[a-z][a-z0-9_-]{0,62}$")
_ALIAS = re.compile(r"^[a-z][a-z0-9-]{0,62}$")
_VERSION = re.compile(r"^v(\d+)$")
_CHUNK = 1 << 20


def _utcnow() -> _dt.datetime:
    return _dt.datetime.now(_dt.timezone.utc)


# ---------------------------------------------------------------------------
# References and results
# ---------------------------------------------------------------------------


@dataclass(frozen=True)
class ModelRef:
    """A parsed model reference: ``name`` plus an alias or a version (``latest`` when neither)."""

    name: str
    alias: str | None = None
    version: str | None = None

    def __str__(self) -> str:
        return f"{self.name}@{self.version or self.alias}"


def is_registry_uri(uri: str) -> bool:
    """True for ``registry://name@alias`` and ``models:/name@alias``."""
    return isinstance(uri, str) and uri.startswith(URI_PREFIXES)


def parse_model_ref(ref: str) -> ModelRef:
    """Parse ``name``, ``name@alias``, ``name@v3`` (optionally prefixed ``registry://`` or ``models:/``).

    >>> parse_model_ref("registry://ner@production")
    ModelRef(name='ner', alias='production', version=None)
    >>> parse_model_ref("models:/ocr@v2").version
    'v2'
    """
    text = ref
    for prefix in URI_PREFIXES:
        if text.startswith(prefix):
            text = text[len(prefix) :]
            break
    name, _, tag = text.strip("/").partition("@")
    if not _NAME.match(name or ""):
        raise ConfigError(
            f"model reference {ref!r}: the name {name!r} must be lower-case letters, digits, '-' or '_' "
            "(e.g. registry://ner@production)"
        )
    if not tag:
        return ModelRef(name, alias="latest")
    if _VERSION.match(tag):
        return ModelRef(name, version=tag)
    if not _ALIAS.match(tag):
        raise ConfigError(f"model reference {ref!r}: {tag!r} is neither a version (v3) nor an alias (production)")
    return ModelRef(name, alias=tag)


@dataclass(frozen=True)
class ResolvedModel:
    """One concrete model version: where its files are and their recorded checksums."""

    name: str
    version: str
    path: str
    sha256s: dict[str, str]
    alias: str | None = None
    metadata: dict = field(default_factory=dict)

    @property
    def uri(self) -> str:
        return f"registry://{self.name}@{self.version}"

    def to_dict(self) -> dict:
        """What a run summary records (no metrics: those stay in the registry)."""
        return {
            "name": self.name,
            "version": self.version,
            "alias": self.alias,
            "path": self.path,
            "uri": self.uri,
            "sha256": dict(self.sha256s),
            "framework": self.metadata.get("framework"),
            "created": self.metadata.get("created"),
        }


# ---------------------------------------------------------------------------
# Checksums
# ---------------------------------------------------------------------------


def _sha256_stream(open_fn: Callable[[], Any]) -> str:
    digest = hashlib.sha256()
    with open_fn() as fh:
        while chunk := fh.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def file_checksums(path: str | os.PathLike, *, exclude: Iterable[str] = (METADATA_FILE,)) -> dict[str, str]:
    """sha256 of every file under ``path`` (a file or a folder), keyed by POSIX path relative to it."""
    root = Path(path)
    skip = set(exclude)
    if root.is_file():
        return {root.name: _sha256_stream(lambda: open(root, "rb"))}
    if not root.is_dir():
        raise ModelLoadError(f"model path {str(root)!r} does not exist: pass a model file or folder")
    out = {}
    for p in sorted(root.rglob("*")):
        if p.is_file():
            rel = p.relative_to(root).as_posix()
            if rel not in skip:
                out[rel] = _sha256_stream(lambda p=p: open(p, "rb"))
    return out


def _verify(name: str, version: str, folder: str, recorded: Mapping[str, str], *, join, opener, lister) -> None:
    """Raise ChecksumMismatch naming the first file whose bytes differ from the record."""
    present = set(lister(folder))
    missing = sorted(set(recorded) - present)
    if missing:
        raise ChecksumMismatch(
            f"model {name}@{version}: file {missing[0]!r} recorded in {METADATA_FILE} is missing from {folder!r}; "
            "the version is damaged: register the model again or point the alias at another version"
        )
    unexpected = sorted(present - set(recorded) - {METADATA_FILE})
    if unexpected:
        raise ChecksumMismatch(
            f"model {name}@{version}: file {unexpected[0]!r} in {folder!r} is not in {METADATA_FILE}; "
            "a registered version must not change: register a new version instead"
        )
    for rel, expected in sorted(recorded.items()):
        actual = _sha256_stream(lambda rel=rel: opener(join(folder, rel)))
        if actual != expected:
            raise ChecksumMismatch(
                f"model {name}@{version}: checksum mismatch for file {rel!r} in {folder!r}: "
                f"sha256 {actual[:16]}... but {METADATA_FILE} records {expected[:16]}...; "
                "the file changed after registration: register the model again or point the alias at another version"
            )


# ---------------------------------------------------------------------------
# Local backend
# ---------------------------------------------------------------------------


class LocalRegistry:
    """A model registry in a local folder (see the module docstring for the layout).

    ``clock`` returns the aware datetime recorded as ``created`` (tests pass
    a fixed one).

    >>> import tempfile, pathlib
    >>> d = pathlib.Path(tempfile.mkdtemp()); (d / "m.onnx").write_bytes(b"x")
    1
    >>> reg = LocalRegistry(d / "registry")
    >>> reg.register("ner", d / "m.onnx", framework="onnx", metrics={"f1": 0.9}).version
    'v1'
    >>> reg.resolve("ner@latest").version
    'v1'
    """

    backend = "local"

    def __init__(self, root: str | os.PathLike, *, clock: Callable[[], _dt.datetime] = _utcnow):
        if "://" in str(root):
            raise ConfigError(
                f"LocalRegistry root {str(root)!r} is not a local folder: use registry.backend=vertex for gs:// models"
            )
        self.root = Path(root)
        self.clock = clock

    # -- writing ----------------------------------------------------------

    def register(
        self,
        name: str,
        model_path: str | os.PathLike,
        *,
        framework: str,
        metrics: Mapping[str, float] | None = None,
        source: Mapping[str, Any] | str | None = None,
        params: Mapping[str, Any] | None = None,
        aliases: Sequence[str] = ("latest",),
    ) -> ResolvedModel:
        """Copy ``model_path`` (a file or folder) in as the next version of ``name``; point ``aliases`` at it."""
        parse_model_ref(name)  # validates the name
        src = Path(model_path)
        if not src.exists():
            raise ModelLoadError(f"cannot register {name!r}: {str(src)!r} does not exist")
        model_dir = self.root / name
        model_dir.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=".incoming-", dir=model_dir))
        try:
            if src.is_dir():
                shutil.copytree(src, tmp, dirs_exist_ok=True)
            else:
                shutil.copy2(src, tmp / src.name)
            (tmp / METADATA_FILE).unlink(missing_ok=True)
            sums = file_checksums(tmp)
            if not sums:
                raise ModelLoadError(f"cannot register {name!r}: {str(src)!r} holds no files")
            for _ in range(100):  # another writer may take the same number: take the next
                version = f"v{self._last_number(name) + 1}"
                metadata = {
                    "name": name,
                    "version": version,
                    "framework": framework,
                    "metrics": {k: float(v) for k, v in (metrics or {}).items()},
                    "params": dict(params or {}),
                    "source": source if isinstance(source, (str, type(None))) else dict(source),
                    "created": self.clock().isoformat(),
                    "sha256": sums,
                }
                (tmp / METADATA_FILE).write_text(json.dumps(metadata, indent=2, sort_keys=True, default=str) + "\n")
                try:
                    os.rename(tmp, model_dir / version)
                    break
                except OSError:
                    if not (model_dir / version).exists():
                        raise
            else:  # pragma: no cover - 100 concurrent writers
                raise ModelLoadError(f"cannot register {name!r}: no free version number under {model_dir}")
        finally:
            if tmp.exists():
                shutil.rmtree(tmp, ignore_errors=True)
        for alias in aliases:
            self.set_alias(name, alias, version)
        return ResolvedModel(name, version, str(model_dir / version), sums, metadata=metadata)

    def set_alias(self, name: str, alias: str, version: str) -> None:
        """Point ``name@alias`` at ``version``, atomically (temporary file + ``os.replace``)."""
        if not _ALIAS.match(alias) or _VERSION.match(alias):
            raise ConfigError(f"alias {alias!r} must be lower-case letters, digits or '-', and not look like a version")
        if not (self.root / name / version / METADATA_FILE).is_file():
            raise ModelLoadError(f"cannot point {name}@{alias} at {version!r}: no such version (versions: {self.versions(name)})")
        alias_dir = self.root / name / "aliases"
        alias_dir.mkdir(parents=True, exist_ok=True)
        tmp = alias_dir / f".{alias}.{uuid.uuid4().hex}.tmp"
        tmp.write_text(version + "\n")
        os.replace(tmp, alias_dir / alias)

    def promote(self, name: str, version: str, alias: str = "production") -> None:
        """Make ``version`` the one ``alias`` (by default ``production``) serves."""
        self.set_alias(name, alias, version)

    # -- reading ----------------------------------------------------------

    def _last_number(self, name: str) -> int:
        return max((int(m.group(1)) for v in self.versions(name) if (m := _VERSION.match(v))), default=0)

    def models(self) -> list[str]:
        return sorted(p.name for p in self.root.iterdir() if p.is_dir() and not p.name.startswith(".")) if self.root.is_dir() else []

    def versions(self, name: str) -> list[str]:
        """Registered versions of ``name``, oldest first."""
        d = self.root / name
        if not d.is_dir():
            return []
        found = [p.name for p in d.iterdir() if _VERSION.match(p.name) and (p / METADATA_FILE).is_file()]
        return sorted(found, key=lambda v: int(v[1:]))

    def aliases(self, name: str) -> dict[str, str]:
        d = self.root / name / "aliases"
        if not d.is_dir():
            return {}
        return {p.name: p.read_text().strip() for p in sorted(d.iterdir()) if not p.name.startswith(".")}

    def metadata(self, name: str, version: str) -> dict:
        path = self.root / name / version / METADATA_FILE
        if not path.is_file():
            raise ModelLoadError(f"model {name}@{version}: no {METADATA_FILE} under {str(path.parent)!r}")
        return json.loads(path.read_text())

    def resolve(self, ref: str | ModelRef, *, verify: bool = True) -> ResolvedModel:
        """The concrete version ``ref`` names, its checksums verified (``ChecksumMismatch`` if not)."""
        r = ref if isinstance(ref, ModelRef) else parse_model_ref(ref)
        version = r.version
        if version is None:
            version = self.aliases(r.name).get(r.alias or "latest")
            if version is None:
                known = self.models()
                hint = f"models: {known}" if r.name not in known else f"aliases: {sorted(self.aliases(r.name))}"
                raise ModelLoadError(
                    f"model {r} is not in the registry at {str(self.root)!r} ({hint}); "
                    f"register it (aisle pipeline run training --local) or promote a version to {r.alias!r}"
                )
        meta = self.metadata(r.name, version)
        folder = str(self.root / r.name / version)
        if verify:
            _verify(
                r.name,
                version,
                folder,
                meta.get("sha256", {}),
                join=os.path.join,
                opener=lambda p: open(p, "rb"),
                lister=_list_local,
            )
        return ResolvedModel(r.name, version, folder, dict(meta.get("sha256", {})), alias=r.alias, metadata=meta)


def _list_local(folder: str) -> list[str]:
    root = Path(folder)
    return [p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file()]


# ---------------------------------------------------------------------------
# Vertex AI backend
# ---------------------------------------------------------------------------


def _label(value: str) -> str:
    """A Vertex label value: lower-case letters, digits, '-' and '_', at most 63 characters."""
    return re.sub(r"[^a-z0-9_-]", "-", str(value).lower())[:63]


def _manifest_digest(sums: Mapping[str, str]) -> str:
    return hashlib.sha256("".join(f"{k}\t{v}\n" for k, v in sorted(sums.items())).encode()).hexdigest()


class VertexRegistry:
    """The Vertex AI Model Registry as an aisle model registry.

    ``register`` copies the model files and a ``metadata.json`` (the same
    document :class:`LocalRegistry` writes, with every sha256) to
    ``<artifact_root>/<name>/<uuid>/`` and calls ``aiplatform.Model.upload``
    with that ``artifact_uri``, labels (framework, a digest of the
    checksums, the headline metrics), the version aliases and, when the
    model already exists, ``parent_model`` so the upload becomes its next
    version. ``resolve`` reads the version an alias names and verifies the
    files against ``metadata.json``; ``deploy`` puts a version on an
    ``Endpoint`` (online serving, only when asked for).

    ``client`` is the ``google.cloud.aiplatform`` module or an object with
    the same ``init``, ``Model`` and ``Endpoint`` members (tests pass a fake
    that records the calls); it is imported only when none is given.
    """

    backend = "vertex"

    def __init__(
        self,
        project: str,
        region: str,
        *,
        artifact_root: str,
        serving_image: str | None = None,
        client: Any = None,
        clock: Callable[[], _dt.datetime] = _utcnow,
        filesystem: Any = None,
    ):
        if not project or not region:
            raise ConfigError("VertexRegistry needs project and region (registry.project / registry.region in the config)")
        if not artifact_root:
            raise ConfigError("VertexRegistry needs artifact_root: the models bucket, e.g. gs://<project>-aisle-dev-models/registry")
        self.project = project
        self.region = region
        self.artifact_root = artifact_root.rstrip("/")
        self.serving_image = serving_image
        self.clock = clock
        self._client = client
        self._fs = filesystem
        self._initialised = False

    @property
    def client(self):
        if self._client is None:
            try:
                from google.cloud import aiplatform
            except ImportError as exc:  # pragma: no cover - a dependency of aisle
                from transforms.errors import missing_extra

                raise missing_extra("google-cloud-aiplatform", "gcp") from exc
            self._client = aiplatform
        if not self._initialised:
            self._client.init(project=self.project, location=self.region)
            self._initialised = True
        return self._client

    @property
    def fs(self):
        if self._fs is None:
            from apache_beam.io.filesystems import FileSystems

            self._fs = FileSystems
        return self._fs

    def _parent(self, name: str):
        found = self.client.Model.list(filter=f'labels.aisle-model="{_label(name)}"', order_by="create_time desc")
        return found[0] if found else None

    def _upload_files(self, src: Path, dest: str, sums: Mapping[str, str]) -> None:
        for rel in sums:
            target = self.fs.join(dest, *rel.split("/"))
            with open(src / rel if src.is_dir() else src, "rb") as fin, self.fs.create(target) as fout:
                shutil.copyfileobj(fin, fout, _CHUNK)

    def register(
        self,
        name: str,
        model_path: str | os.PathLike,
        *,
        framework: str,
        metrics: Mapping[str, float] | None = None,
        source: Mapping[str, Any] | str | None = None,
        params: Mapping[str, Any] | None = None,
        aliases: Sequence[str] = ("latest",),
    ) -> ResolvedModel:
        parse_model_ref(name)
        src = Path(model_path)
        sums = file_checksums(src)
        if not sums:
            raise ModelLoadError(f"cannot register {name!r}: {str(src)!r} holds no files")
        dest = self.fs.join(self.artifact_root, name, uuid.uuid4().hex[:16])
        metadata = {
            "name": name,
            "framework": framework,
            "metrics": {k: float(v) for k, v in (metrics or {}).items()},
            "params": dict(params or {}),
            "source": source if isinstance(source, (str, type(None))) else dict(source),
            "created": self.clock().isoformat(),
            "sha256": sums,
        }
        self._upload_files(src, dest, sums)
        with self.fs.create(self.fs.join(dest, METADATA_FILE)) as fh:
            fh.write((json.dumps(metadata, indent=2, sort_keys=True, default=str) + "\n").encode())
        labels = {"aisle-model": _label(name), "framework": _label(framework), "sha256": _manifest_digest(sums)[:32]}
        for k, v in sorted((metrics or {}).items())[:8]:
            labels[_label(f"m-{k}")] = _label(f"{float(v):.4g}".replace(".", "_"))
        parent = self._parent(name)
        model = self.client.Model.upload(
            display_name=name,
            artifact_uri=dest,
            serving_container_image_uri=self.serving_image,
            parent_model=parent.resource_name if parent is not None else None,
            is_default_version=True,
            version_aliases=[a for a in aliases if a != "default"],
            version_description=json.dumps({k: metadata[k] for k in ("framework", "metrics", "created")}, default=str)[:1000],
            description=f"aisle model {name} ({framework})",
            labels=labels,
            sync=True,
        )
        version = f"v{getattr(model, 'version_id', '1')}"
        return ResolvedModel(name, version, dest, sums, metadata=metadata | {"resource_name": model.resource_name})

    def _model(self, name: str, tag: str):
        """``name@tag`` where tag is an alias or a version (``v3`` -> Vertex version id ``3``)."""
        tag = tag[1:] if _VERSION.match(tag) else tag
        parent = self._parent(name)
        if parent is None:
            raise ModelLoadError(f"model {name!r} is not in the Vertex AI Model Registry of {self.project}/{self.region}")
        return self.client.Model(model_name=f"{parent.resource_name}@{tag}")

    def set_alias(self, name: str, alias: str, version: str) -> None:
        """Move ``alias`` to ``version`` (Vertex moves an alias from its previous version in one call)."""
        model = self._model(name, version)
        model.versioning_registry.add_version_aliases([alias], version=version[1:] if _VERSION.match(version) else version)

    def promote(self, name: str, version: str, alias: str = "production") -> None:
        self.set_alias(name, alias, version)

    def resolve(self, ref: str | ModelRef, *, verify: bool = True) -> ResolvedModel:
        r = ref if isinstance(ref, ModelRef) else parse_model_ref(ref)
        model = self._model(r.name, r.version or r.alias)
        folder = model.uri.rstrip("/")
        with self.fs.open(self.fs.join(folder, METADATA_FILE)) as fh:
            meta = json.loads(fh.read())
        version = f"v{model.version_id}"
        if verify:
            _verify(
                r.name,
                version,
                folder,
                meta.get("sha256", {}),
                join=self.fs.join,
                opener=self.fs.open,
                lister=lambda f: [
                    m.path[len(f) + 1 :] for m in self.fs.match([self.fs.join(f, "**")])[0].metadata_list
                ],
            )
        return ResolvedModel(r.name, version, folder, dict(meta.get("sha256", {})), alias=r.alias, metadata=meta)

    def deploy(
        self,
        name: str,
        version: str,
        *,
        endpoint_name: str | None = None,
        machine_type: str = "n1-standard-2",
        min_replica_count: int = 1,
        max_replica_count: int = 1,
        service_account: str | None = None,
    ):
        """Deploy ``name@version`` to an endpoint (created when none of that name exists); returns the endpoint."""
        model = self._model(name, version)
        display = endpoint_name or f"aisle-{name}"
        existing = self.client.Endpoint.list(filter=f'display_name="{display}"')
        endpoint = existing[0] if existing else self.client.Endpoint.create(display_name=display, labels={"aisle-model": _label(name)})
        model.deploy(
            endpoint=endpoint,
            deployed_model_display_name=f"{name}-{version}",
            traffic_percentage=100,
            machine_type=machine_type,
            min_replica_count=min_replica_count,
            max_replica_count=max_replica_count,
            service_account=service_account,
            sync=True,
        )
        return endpoint


# ---------------------------------------------------------------------------
# Selection and URI resolution
# ---------------------------------------------------------------------------


def registry_from_config(cfg: Any, *, client: Any = None):
    """The registry a configuration names: ``cfg.registry.backend`` is ``local`` or ``vertex``.

    ``cfg`` is a :class:`pipelines.config.Config` (or anything with a
    ``registry`` attribute carrying ``backend``, ``root``, ``project``,
    ``region``, ``artifact_root``, ``serving_image``).
    """
    reg = getattr(cfg, "registry", cfg)
    backend = getattr(reg, "backend", "local")
    if backend == "local":
        return LocalRegistry(reg.root)
    if backend == "vertex":
        return VertexRegistry(
            reg.project, reg.region, artifact_root=reg.artifact_root, serving_image=getattr(reg, "serving_image", None), client=client
        )
    raise ConfigError(f"registry.backend={backend!r}: use 'local' or 'vertex'")


def resolve_model_uri(uri: str | None, registry=None) -> tuple[str | None, dict]:
    """Resolve a model location for a batch job at launch: ``(path, version_info)``.

    * ``registry://name@alias`` / ``models:/name@alias`` / ``...@v3``: the
      concrete version the alias names now, checksums verified; the job
      uses ``path`` (a local folder or ``gs://``) for its whole run and
      records ``version_info`` in its run summary.
    * a plain path (or None, for a stage's packaged default model) is
      returned unchanged with ``{"uri": uri, "resolved": False}``.
    """
    if uri is None or not is_registry_uri(uri):
        return uri, {"uri": uri, "path": uri, "resolved": False}
    if registry is None:
        raise ConfigError(f"{uri!r} names a registry model but no registry was given: pass --registry DIR or a config with registry.root")
    model = registry.resolve(uri)
    return model.path, {"uri": uri, "resolved": True, **model.to_dict()}
