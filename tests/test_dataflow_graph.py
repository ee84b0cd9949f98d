"""The ingestion job builds a valid Dataflow job without submitting it (dry run)."""

from __future__ import annotations

import datetime as dt

import apache_beam as beam
from apache_beam.options.pipeline_options import PipelineOptions
from apache_beam.portability.api import beam_runner_api_pb2

from pipelines.ingest import build_ingest
from transforms.ingest import IngestConfig

IMAGE = "europe-west1-docker.pkg.dev/demo-project/aisle/aisle:test"
STABLE_LABELS = {
    "Ingest/ListInputs", "Ingest/PlanChunks", "Ingest/SpreadChunks", "Ingest/ParseChunks", "Ingest/GroupPartitions",
    "Ingest/BuildPartitions", "Ingest/GroupProductPartials", "Ingest/BuildProducts", "Ingest/SumCounts", "Ingest/Commit",
}


def dataflow_job(tmp_path, **cfg):
    options = PipelineOptions([
        "--runner=DataflowRunner", "--project=demo-project", "--region=europe-west1",
        "--temp_location=gs://demo-project-aisle-dev-dataflow/tmp", "--dry_run=True",
        f"--sdk_container_image={IMAGE}", "--sdk_location=container", "--no_use_public_ips",
        "--service_account_email=aisle-dev-dataflow@demo-project.iam.gserviceaccount.com",
    ])
    p = beam.Pipeline(options=options)
    config = IngestConfig(format="online-retail", out="gs://demo-project-aisle-dev-processed/ingest",
                          now=dt.datetime(2026, 1, 1, tzinfo=dt.timezone.utc), **cfg)
    build_ingest(p, ["gs://demo-project-aisle-dev-landing/retail/2011-10.csv"], config, bigquery_dataset="demo-project:aisle_dev")
    return p.run().job


def test_dry_run_builds_the_job_with_our_container_and_labels(tmp_path):
    job = dataflow_job(tmp_path)
    proto = job.proto
    assert proto.name.startswith("beamapp") and proto.type_ == 1  # JOB_TYPE_BATCH
    images = {
        beam_runner_api_pb2.DockerPayload.FromString(env.payload).container_image
        for env in job.proto_pipeline.components.environments.values()
        if env.urn == "beam:env:docker:v1"
    }
    assert images == {IMAGE}, "the project image must be the SDK container"
    transforms = {t.unique_name for t in job.proto_pipeline.components.transforms.values()}
    missing = STABLE_LABELS - transforms
    assert not missing, f"labels changed (this breaks updates of running jobs): {missing}"
    assert any(name.startswith("WriteToBigQuery_events") for name in transforms)


ENRICH_LABELS = {
    "ListCatalog", "CatalogFiles", "SpreadCatalogFiles", "ReadCatalog", "Reshuffle", "LoadImages", "OCR", "OcrLines",
    "OcrText", "OcrDeadLetter", "WriteOcrLines/GroupShards", "WriteOcrLines/WriteShards", "WriteOcrText/WriteShards",
    "WriteOcrDeadLetter/WriteShards", "ReadProducts", "NER/GroupBatches", "NER/RunNer", "NER/Outputs",
    "WriteEntities/WriteShards", "WriteEnrichedCatalog/WriteShards", "WriteNerDeadLetters/WriteShards",
}
RECOMMEND_LABELS = {
    "ReadEvents", "Purchases", "GroupByTransaction", "MergeBasket", "ReadCatalog", "ColdTitles", "ItemCounts",
    "NearestNeighbours", "SimilarFallback", "ScoreItems", "Cooccurrence", "JoinFBT", "FBTFallback", "GroupByVisitor",
    "History", "ScoreVisitors", "ForYouFallback", "WriteSimilarItems/WriteShards",
    "WriteFrequentlyBoughtTogether/WriteShards", "WriteRecommendedForYou/WriteShards", "WriteDeadLetters/WriteShards",
}


def dry_run(build) -> object:
    """Build a job with ``build(pipeline)`` on DataflowRunner options and return it, not submitted."""
    options = PipelineOptions([
        "--runner=DataflowRunner", "--project=demo-project", "--region=europe-west1",
        "--temp_location=gs://demo-project-aisle-dev-dataflow/tmp", "--dry_run=True",
        f"--sdk_container_image={IMAGE}", "--sdk_location=container", "--no_use_public_ips",
    ])
    p = beam.Pipeline(options=options)
    build(p)
    return p.run().job


def check_job(job, labels: set[str]):
    assert job.proto.type_ == 1  # JOB_TYPE_BATCH
    images = {
        beam_runner_api_pb2.DockerPayload.FromString(env.payload).container_image
        for env in job.proto_pipeline.components.environments.values()
        if env.urn == "beam:env:docker:v1"
    }
    assert images == {IMAGE}, "the project image must be the SDK container"
    transforms = {t.unique_name for t in job.proto_pipeline.components.transforms.values()}
    missing = labels - transforms
    assert not missing, f"labels changed (this breaks updates of running jobs): {missing}"


def test_enrich_dry_run_needs_no_models_or_bucket_access():
    """OCR + NER on gs:// paths nobody can read here: the graph is built, nothing is listed or loaded."""
    from pipelines.enrich import build_enrich

    job = dry_run(lambda p: build_enrich(
        p, "gs://demo-project-aisle-dev-processed/ingest/products", "gs://demo-project-aisle-dev-processed/enriched/_staging-x",
        ner_model="gs://demo-project-aisle-dev-models/ner/v3",
    ))
    check_job(job, ENRICH_LABELS)


def test_recommend_dry_run_needs_no_model_or_bucket_access():
    from pipelines.recommend import add_recommend_steps

    job = dry_run(lambda p: add_recommend_steps(
        p, events="gs://demo-project-aisle-dev-processed/ingest/events", catalog="gs://demo-project-aisle-dev-processed/ingest/products",
        model_dir="gs://demo-project-aisle-dev-models/recommender/v2", out_dir="gs://demo-project-aisle-dev-processed/recs/_staging-x",
    ))
    check_job(job, RECOMMEND_LABELS)
