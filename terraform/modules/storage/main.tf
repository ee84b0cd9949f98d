# The five buckets of an aisle environment. All are private: uniform
# bucket-level access, public access prevention enforced, access granted
# only to aisle's service accounts (see modules/iam). Buckets that hold data
# which cannot be re-created keep object versions.
#
# One google_storage_bucket.this[<purpose>] per entry of local.buckets; the
# entries hold what differs between buckets (name, versioning, lifecycle).

locals {
  prefix = "${var.project_id}-${var.name_prefix}"

  # purpose => name suffix, whether object versions are kept, and the
  # lifecycle rules: a condition (age, days_since_noncurrent_time,
  # matches_prefix) and an action (type, storage_class).
  buckets = {
    # Landing: the raw catalog and event files as they arrived. They are the
    # source of truth for every re-run, so versions are kept.
    landing = {
      suffix     = "landing"
      versioning = true
      lifecycle_rules = [
        # Raw files are read by the ingest job soon after they land; older
        # ones are kept for re-runs, in a cheaper class.
        {
          condition = { age = var.landing_nearline_after_days }
          action    = { type = "SetStorageClass", storage_class = "NEARLINE" }
        },
        {
          condition = { days_since_noncurrent_time = var.noncurrent_version_retention_days }
          action    = { type = "Delete" }
        },
      ]
    }

    # Processed: validated Product/UserEvent outputs, dead letters,
    # enrichment and recommendation outputs. Versioned: an overwrite by
    # mistake can be undone.
    processed = {
      suffix     = "processed"
      versioning = true
      lifecycle_rules = [
        {
          condition = { days_since_noncurrent_time = var.noncurrent_version_retention_days }
          action    = { type = "Delete" }
        },
      ]
    }

    # Models: the model registry (every version, its metrics and checksum).
    # Versioned, and old versions are kept longer than data versions.
    models = {
      suffix     = "models"
      versioning = true
      lifecycle_rules = [
        {
          condition = { days_since_noncurrent_time = var.model_noncurrent_version_retention_days }
          action    = { type = "Delete" }
        },
      ]
    }

    # Pipeline root: Vertex AI Pipelines artifacts under runs/, compiled
    # pipeline templates under templates/. Run artifacts can be re-created
    # by re-running the pipeline, so they expire and are not versioned.
    # CKV_GCP_78 (versioning): Holds re-creatable pipeline run artifacts that
    # expire by lifecycle rule; versions would only keep expired intermediates.
    pipeline_root = {
      suffix     = "pipeline-root"
      versioning = false
      lifecycle_rules = [
        {
          condition = { age = var.pipeline_run_retention_days, matches_prefix = ["runs/"] }
          action    = { type = "Delete" }
        },
      ]
    }

    # Dataflow: temp/ and staging/ locations of Dataflow jobs, and the flex
    # template specs under templates/. Temp files are scratch space.
    # CKV_GCP_78 (versioning): Dataflow temp and staging scratch files; the
    # flex template specs in it are written by Terraform and re-created by an
    # apply.
    dataflow = {
      suffix     = "dataflow"
      versioning = false
      lifecycle_rules = [
        {
          condition = { age = var.dataflow_temp_retention_days, matches_prefix = ["temp/"] }
          action    = { type = "Delete" }
        },
        {
          condition = { age = var.dataflow_staging_retention_days, matches_prefix = ["staging/"] }
          action    = { type = "Delete" }
        },
      ]
    }
  }
}

resource "google_storage_bucket" "this" {
  #checkov:skip=CKV_GCP_62:Access to objects is recorded by Cloud Audit Logs (data access logs); a separate usage-log bucket would only duplicate them.
  #checkov:skip=CKV_GCP_78:Only pipeline_root and dataflow are unversioned (landing, processed and models keep versions). pipeline_root: Holds re-creatable pipeline run artifacts that expire by lifecycle rule; versions would only keep expired intermediates. dataflow: Dataflow temp and staging scratch files; the flex template specs in it are written by Terraform and re-created by an apply.
  for_each = local.buckets

  name                        = "${local.prefix}-${each.value.suffix}"
  project                     = var.project_id
  location                    = var.location
  storage_class               = "STANDARD"
  uniform_bucket_level_access = true
  public_access_prevention    = "enforced"
  force_destroy               = var.force_destroy
  labels                      = var.labels

  versioning {
    enabled = each.value.versioning
  }

  dynamic "encryption" {
    for_each = var.kms_key_name == null ? [] : [var.kms_key_name]
    content {
      default_kms_key_name = encryption.value
    }
  }

  dynamic "lifecycle_rule" {
    for_each = each.value.lifecycle_rules
    content {
      condition {
        age                        = lookup(lifecycle_rule.value.condition, "age", null)
        days_since_noncurrent_time = lookup(lifecycle_rule.value.condition, "days_since_noncurrent_time", null)
        matches_prefix             = lookup(lifecycle_rule.value.condition, "matches_prefix", null)
      }
      action {
        type          = lifecycle_rule.value.action.type
        storage_class = lookup(lifecycle_rule.value.action, "storage_class", null)
      }
    }
  }
}
