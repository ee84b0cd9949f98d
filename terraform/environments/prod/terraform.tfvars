# Production parameters of aisle. project_id is given at apply:
#   terraform apply -var project_id=<project>

region            = "europe-west1"
bigquery_location = "EU"

# Pin a released image; `latest` is for dev.
image_tag = "0.1.0"

labels = {
  cost-center = "retail-ml"
}

# Customer-managed encryption: a key is used only in its own location, so
# with a key in europe-west1 set bigquery_location = "europe-west1" too.
# kms_key_name = "projects/<kms-project>/locations/europe-west1/keyRings/aisle/cryptoKeys/aisle-prod"

private_dataflow_network = true
dataflow_subnet_cidr     = "10.20.0.0/20"
dataflow_max_workers     = 50

enable_tensorboard  = false
force_destroy       = false
deletion_protection = true

# Parameter values may name buckets as {landing}, {processed}, {models},
# {pipeline_root}, {dataflow} (replaced by gs://<bucket>).
schedules = {
  # Events land in landing/events/incoming/ during the day; ingest them
  # every night into processed/events/.
  ingest-events = {
    target      = "flex_template"
    template    = "ingest"
    schedule    = "0 1 * * *"
    time_zone   = "Europe/London"
    description = "Nightly ingest of the user event files that landed."
    max_workers = 50
    parameters = {
      input   = "{landing}/events/incoming/*"
      format  = "retail-json"
      kind    = "events"
      catalog = "{processed}/catalog"
      out     = "{processed}/events"
    }
  }

  # The catalog arrives once a week.
  ingest-catalog = {
    target      = "flex_template"
    template    = "ingest"
    schedule    = "0 0 * * 1"
    time_zone   = "Europe/London"
    description = "Weekly ingest of the catalog export."
    max_workers = 20
    parameters = {
      input  = "{landing}/catalog/incoming/*"
      format = "retail-json"
      kind   = "products"
      out    = "{processed}/catalog"
    }
  }

  # The batch pipeline (ingest -> enrich -> recommend -> publish) on Vertex
  # AI Pipelines, after the nightly ingest.
  batch = {
    target      = "vertex_pipeline"
    template    = "batch"
    schedule    = "0 4 * * *"
    time_zone   = "Europe/London"
    description = "Nightly batch pipeline: enrich the catalog and refresh recommendations."
    parameters = {
      catalog = "{processed}/catalog"
      events  = "{processed}/events"
      out     = "{processed}/batch"
    }
  }
}
