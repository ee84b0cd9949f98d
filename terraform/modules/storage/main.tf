# The five buckets of an aisle environment. All are private: uniform
# bucket-level access, public access prevention enforced, access granted
# only to aisle's service accounts (see modules/iam). Buckets that hold data
# which cannot be re-created keep object versions.

locals {
  prefix = "${var.project_id}-${var.name_prefix}"
}

# Landing: the raw catalog and event files as they arrived. They are the
# source of truth for every re-run, so versions are kept.
resource "google_storage_bucket" "landing" {
  #checkov:skip=CKV_GCP_62:Access to objects is recorded by Cloud Audit Logs (data access logs); a separate usage-log bucket would only duplicate them.
  name                        = "${local.prefix}-landing"
  project                     = var.project_id
  location                    = var.location
  storage_class               = "STANDARD"
  uniform_bucket_level_access = true
  public_access_prevention    = "enforced"
  force_destroy               = var.force_destroy
  labels                      = var.labels

  versioning {
    enabled = true
  }

  dynamic "encryption" {
    for_each = var.kms_key_name == null ? [] : [var.kms_key_name]
    content {
      default_kms_key_name = encryption.value
    }
  }

  # Raw files are read by the ingest job soon after they land; older ones
  # are kept for re-runs, in a cheaper class.
  lifecycle_rule {
    condition {
      age = var.landing_nearline_after_days
    }
    action {
      type          = "SetStorageClass"
      storage_class = "NEARLINE"
    }
  }

  lifecycle_rule {
    condition {
      days_since_noncurrent_time = var.noncurrent_version_retention_days
    }
    action {
      type = "Delete"
    }
  }
}

# Processed: validated Product/UserEvent outputs, dead letters, enrichment
# and recommendation outputs. Versioned: an overwrite by mistake can be undone.
resource "google_storage_bucket" "processed" {
  #checkov:skip=CKV_GCP_62:Access to objects is recorded by Cloud Audit Logs (data access logs); a separate usage-log bucket would only duplicate them.
  name                        = "${local.prefix}-processed"
  project                     = var.project_id
  location                    = var.location
  storage_class               = "STANDARD"
  uniform_bucket_level_access = true
  public_access_prevention    = "enforced"
  force_destroy               = var.force_destroy
  labels                      = var.labels

  versioning {
    enabled = true
  }

  dynamic "encryption" {
    for_each = var.kms_key_name == null ? [] : [var.kms_key_name]
    content {
      default_kms_key_name = encryption.value
    }
  }

  lifecycle_rule {
    condition {
      days_since_noncurrent_time = var.noncurrent_version_retention_days
    }
    action {
      type = "Delete"
    }
  }
}

# Models: the model registry (every version, its metrics and checksum).
# Versioned, and old versions are kept longer than data versions.
resource "google_storage_bucket" "models" {
  #checkov:skip=CKV_GCP_62:Access to objects is recorded by Cloud Audit Logs (data access logs); a separate usage-log bucket would only duplicate them.
  name                        = "${local.prefix}-models"
  project                     = var.project_id
  location                    = var.location
  storage_class               = "STANDARD"
  uniform_bucket_level_access = true
  public_access_prevention    = "enforced"
  force_destroy               = var.force_destroy
  labels                      = var.labels

  versioning {
    enabled = true
  }

  dynamic "encryption" {
    for_each = var.kms_key_name == null ? [] : [var.kms_key_name]
    content {
      default_kms_key_name = encryption.value
    }
  }

  lifecycle_rule {
    condition {
      days_since_noncurrent_time = var.model_noncurrent_version_retention_days
    }
    action {
      type = "Delete"
    }
  }
}

# Pipeline root: Vertex AI Pipelines artifacts under runs/, compiled
# pipeline templates under templates/. Run artifacts can be re-created by
# re-running the pipeline, so they expire and are not versioned.
resource "google_storage_bucket" "pipeline_root" {
  #checkov:skip=CKV_GCP_62:Access to objects is recorded by Cloud Audit Logs (data access logs); a separate usage-log bucket would only duplicate them.
  #checkov:skip=CKV_GCP_78:Holds re-creatable pipeline run artifacts that expire by lifecycle rule; versions would only keep expired intermediates.
  name                        = "${local.prefix}-pipeline-root"
  project                     = var.project_id
  location                    = var.location
  storage_class               = "STANDARD"
  uniform_bucket_level_access = true
  public_access_prevention    = "enforced"
  force_destroy               = var.force_destroy
  labels                      = var.labels

  versioning {
    enabled = false
  }

  dynamic "encryption" {
    for_each = var.kms_key_name == null ? [] : [var.kms_key_name]
    content {
      default_kms_key_name = encryption.value
    }
  }

  lifecycle_rule {
    condition {
      age            = var.pipeline_run_retention_days
      matches_prefix = ["runs/"]
    }
    action {
      type = "Delete"
    }
  }
}

# Dataflow: temp/ and staging/ locations of Dataflow jobs, and the flex
# template specs under templates/. Temp files are scratch space.
resource "google_storage_bucket" "dataflow" {
  #checkov:skip=CKV_GCP_62:Access to objects is recorded by Cloud Audit Logs (data access logs); a separate usage-log bucket would only duplicate them.
  #checkov:skip=CKV_GCP_78:Dataflow temp and staging scratch files; the flex template specs in it are written by Terraform and re-created by an apply.
  name                        = "${local.prefix}-dataflow"
  project                     = var.project_id
  location                    = var.location
  storage_class               = "STANDARD"
  uniform_bucket_level_access = true
  public_access_prevention    = "enforced"
  force_destroy               = var.force_destroy
  labels                      = var.labels

  versioning {
    enabled = false
  }

  dynamic "encryption" {
    for_each = var.kms_key_name == null ? [] : [var.kms_key_name]
    content {
      default_kms_key_name = encryption.value
    }
  }

  lifecycle_rule {
    condition {
      age            = var.dataflow_temp_retention_days
      matches_prefix = ["temp/"]
    }
    action {
      type = "Delete"
    }
  }

  lifecycle_rule {
    condition {
      age            = var.dataflow_staging_retention_days
      matches_prefix = ["staging/"]
    }
    action {
      type = "Delete"
    }
  }
}
