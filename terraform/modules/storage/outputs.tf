output "landing_bucket" {
  description = "Name of the landing (raw input) bucket."
  value       = google_storage_bucket.landing.name
}

output "processed_bucket" {
  description = "Name of the processed data bucket."
  value       = google_storage_bucket.processed.name
}

output "models_bucket" {
  description = "Name of the model registry bucket."
  value       = google_storage_bucket.models.name
}

output "pipeline_root_bucket" {
  description = "Name of the Vertex AI Pipelines root bucket."
  value       = google_storage_bucket.pipeline_root.name
}

output "dataflow_bucket" {
  description = "Name of the Dataflow temp/staging/templates bucket."
  value       = google_storage_bucket.dataflow.name
}

output "buckets" {
  description = "Every bucket name by purpose (landing, processed, models, pipeline_root, dataflow)."
  value = {
    landing       = google_storage_bucket.landing.name
    processed     = google_storage_bucket.processed.name
    models        = google_storage_bucket.models.name
    pipeline_root = google_storage_bucket.pipeline_root.name
    dataflow      = google_storage_bucket.dataflow.name
  }
}
