# Customer-managed encryption: lets the Google service agents that encrypt
# aisle's data use the Cloud KMS key. Called only when a key is given; the
# key itself (its ring, rotation and protection) is owned by whoever owns
# the KMS project, not by aisle.

data "google_project" "this" {
  project_id = var.project_id
}

# Looking these up also creates the agents where they do not exist yet.
data "google_storage_project_service_account" "this" {
  project = var.project_id
}

data "google_bigquery_default_service_account" "this" {
  project = var.project_id
}

resource "google_project_service_identity" "this" {
  for_each = toset(["aiplatform.googleapis.com", "artifactregistry.googleapis.com", "dataflow.googleapis.com"])
  provider = google-beta

  project = var.project_id
  service = each.value
}

locals {
  agents = {
    storage          = "serviceAccount:${data.google_storage_project_service_account.this.email_address}"
    bigquery         = "serviceAccount:${data.google_bigquery_default_service_account.this.email}"
    aiplatform       = "serviceAccount:${google_project_service_identity.this["aiplatform.googleapis.com"].email}"
    artifactregistry = "serviceAccount:${google_project_service_identity.this["artifactregistry.googleapis.com"].email}"
    dataflow         = "serviceAccount:${google_project_service_identity.this["dataflow.googleapis.com"].email}"
    # Dataflow worker disks are Compute Engine disks.
    compute = "serviceAccount:service-${data.google_project.this.number}@compute-system.iam.gserviceaccount.com"
  }
}

resource "google_kms_crypto_key_iam_member" "this" {
  for_each = local.agents

  crypto_key_id = var.kms_key_name
  role          = "roles/cloudkms.cryptoKeyEncrypterDecrypter"
  member        = each.value
}
