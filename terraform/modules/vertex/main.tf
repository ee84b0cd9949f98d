# Vertex AI resources that Terraform must own. Vertex AI Pipelines writes
# lineage to the region's "default" metadata store, which Vertex creates on
# the first pipeline run with Google-managed keys; Terraform creates it only
# when a customer-managed key is asked for, since its key is fixed at
# creation. A TensorBoard instance is created only when training logs to it.

resource "google_vertex_ai_metadata_store" "default" {
  count    = var.kms_key_name == null ? 0 : 1
  provider = google-beta

  project     = var.project_id
  region      = var.region
  name        = "default"
  description = "Lineage of the ${var.name_prefix} pipeline runs."

  encryption_spec {
    kms_key_name = var.kms_key_name
  }
}

resource "google_vertex_ai_tensorboard" "this" {
  #checkov:skip=CKV2_GCP_26:CMEK is optional: the instance is encrypted with kms_key_name when it is set, with Google-managed keys otherwise.
  count = var.enable_tensorboard ? 1 : 0

  project      = var.project_id
  region       = var.region
  display_name = "${var.name_prefix}-training"
  description  = "Training curves of the ${var.name_prefix} models."
  labels       = var.labels

  dynamic "encryption_spec" {
    for_each = var.kms_key_name == null ? [] : [var.kms_key_name]
    content {
      kms_key_name = encryption_spec.value
    }
  }
}
