"""KFP component ``register``: put the chosen model in the model registry (``components.registry``).

The registry is the configuration's ``registry`` section as a dict
(``{"backend": "local", "root": ...}`` or ``{"backend": "vertex",
"project": ..., "region": ..., "artifact_root": ..., "serving_image":
..., "deploy_endpoint": false}``). The new version gets the ``latest``
alias, and ``production`` too when ``promote`` is true; with
``deploy_endpoint`` a Vertex registry also deploys it to an endpoint.
"""

from kfp import dsl
from kfp.dsl import Input, Markdown, Model, Output

from components.kfp.images import AISLE_IMAGE


@dsl.component(base_image=AISLE_IMAGE, install_kfp_package=False)
def register(
    name: str,
    model: Input[Model],
    registry: dict,
    registered: Output[Markdown],
    promote: bool = True,
    run_name: str = "",
) -> str:
    """Register ``model`` as the next version of ``name``; returns the version (e.g. ``v3``)."""
    import json
    import os
    import types

    from components.registry import registry_from_config
    from transforms.errors import ConfigError

    if not isinstance(registry, dict) or "backend" not in registry:
        raise ConfigError(f"registry={registry!r}: pass the config's registry section, e.g. {{'backend': 'local', 'root': 'out/registry'}}")
    reg = registry_from_config(types.SimpleNamespace(registry=types.SimpleNamespace(**registry)))
    meta = dict(model.metadata or {})
    aliases = ("latest", "production") if promote else ("latest",)
    version = reg.register(
        name,
        model.path,
        framework=str(meta.get("framework", "unknown")),
        metrics={k: v for k, v in (meta.get("metrics") or {}).items() if isinstance(v, (int, float))},
        source={"candidate": meta.get("candidate"), "pipeline_run": run_name, "artifact": model.uri},
        params={k: meta[k] for k in ("engine", "tflite", "metric", "candidates") if k in meta},
        aliases=aliases,
    )
    if registry.get("deploy_endpoint") and hasattr(reg, "deploy"):
        reg.deploy(name, version.version, machine_type=registry.get("machine_type", "n1-standard-2"))
    lines = [
        f"# {name} {version.version}",
        "",
        f"- registry: {registry.get('backend')} ({registry.get('root') or registry.get('artifact_root')})",
        f"- aliases: {', '.join(aliases)}",
        f"- candidate: {meta.get('candidate')} ({meta.get('framework')})",
        f"- path: {version.path}",
        "",
        "| file | sha256 |",
        "| --- | --- |",
        *[f"| {f} | `{h}` |" for f, h in sorted(version.sha256s.items())],
        "",
        "```json",
        json.dumps(meta.get("metrics", {}), indent=2, sort_keys=True),
        "```",
    ]
    os.makedirs(os.path.dirname(registered.path) or ".", exist_ok=True)
    with open(registered.path, "w") as fh:
        fh.write("\n".join(lines) + "\n")
    registered.metadata.update({"name": name, "version": version.version, "aliases": list(aliases)})
    return version.version
