# The Docker repository for aisle's container image, used by the Dataflow
# flex templates, the Dataflow workers and the Vertex AI pipeline steps.
resource "google_artifact_registry_repository" "this" {
  #checkov:skip=CKV_GCP_84:CMEK is optional: set kms_key_name to encrypt the repository with a customer-managed key; by default Google-managed keys encrypt it.
  project       = var.project_id
  location      = var.location
  repository_id = var.repository_id
  description   = "aisle container images."
  format        = "DOCKER"
  kms_key_name  = var.kms_key_name
  labels        = var.labels

  docker_config {
    immutable_tags = false
  }

  # Untagged images (left behind when a tag moves) are removed after a while;
  # the newest tagged versions are always kept.
  cleanup_policy_dry_run = false

  cleanup_policies {
    id     = "keep-recent-versions"
    action = "KEEP"
    most_recent_versions {
      keep_count = var.keep_recent_versions
    }
  }

  cleanup_policies {
    id     = "delete-untagged"
    action = "DELETE"
    condition {
      tag_state  = "UNTAGGED"
      older_than = "${var.untagged_retention_days * 86400}s"
    }
  }
}
