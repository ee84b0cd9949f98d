"""KFP component ``publish``: copy the batch outputs to their destination and write the run summary.

``out`` is the folder consumers read (``gs://<project>-aisle-<env>-processed/batch``
on Google Cloud): ``<out>/enriched/`` and ``<out>/recommendations/`` are
replaced (staged, then swapped in), and ``<out>/summary_batch.json`` records what produced them,
including the model versions the enrich and recommend steps resolved.
"""

from kfp import dsl
from kfp.dsl import Dataset, Input, Markdown, Metrics, Output

from components.kfp.images import AISLE_IMAGE


@dsl.component(base_image=AISLE_IMAGE, install_kfp_package=False)
def publish(
    enriched: Input[Dataset],
    recommendations: Input[Dataset],
    out: str,
    summary: Output[Markdown],
    metrics: Output[Metrics],
    run_name: str = "",
):
    """Publish ``enriched`` and ``recommendations`` under ``out`` (local or gs://)."""
    import datetime as dt
    import json
    import os
    import shutil
    import uuid

    from apache_beam.io.filesystems import FileSystems

    from transforms.io import commit_outputs

    from components.kfp._common import copy_tree, location, log_metrics, write_text

    parts = {"enriched": location(enriched), "recommendations": location(recommendations)}
    if "://" not in out:  # stage, then swap each folder in: readers see the old or the new one, never a mix
        staging = os.path.join(out, f"_staging-{uuid.uuid4().hex[:12]}")
        counts = {name: len(copy_tree(src, os.path.join(staging, name))) for name, src in parts.items()}
        commit_outputs(staging, out, list(parts))
        shutil.rmtree(staging, ignore_errors=True)
    else:  # object stores: every object appears whole; old objects are removed first
        counts = {}
        for name, src in parts.items():
            dest = FileSystems.join(out, name)
            old = FileSystems.match([FileSystems.join(dest, "**")])[0].metadata_list
            if old:
                FileSystems.delete([m.path for m in old])
            counts[name] = len(copy_tree(src, dest))
    record = {
        "run": run_name,
        "published": dt.datetime.now(dt.timezone.utc).isoformat(),
        "out": out,
        "files": counts,
        "models": {"enrich": dict(enriched.metadata.get("models") or {}), "recommend": recommendations.metadata.get("model")},
        "sources": parts,
    }
    for name in ("enriched", "recommendations"):
        for summary_name in ("summary_enrich.json", "summary.json"):
            path = FileSystems.join(out, name, summary_name)
            if FileSystems.exists(path):
                with FileSystems.open(path) as fh:
                    record.setdefault("summaries", {})[name] = json.loads(fh.read())
                break
    write_text(FileSystems.join(out, "summary_batch.json"), json.dumps(record, indent=2, sort_keys=True, default=str) + "\n")
    os.makedirs(os.path.dirname(summary.path) or ".", exist_ok=True)
    with open(summary.path, "w") as fh:
        fh.write(f"# batch outputs in {out}\n\n")
        fh.write("| part | files | from |\n| --- | --- | --- |\n")
        for name, src in parts.items():
            fh.write(f"| {name} | {counts[name]} | {src} |\n")
        fh.write(f"\nModels: enrich {record['models']['enrich']}, recommend {record['models']['recommend']}\n")
    summary.metadata.update({"out": out})
    log_metrics(metrics, {"files": counts})
