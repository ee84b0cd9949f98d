output "landing_bucket" {
  description = "Name of the landing (raw input) bucket."
  value       = google_storage_bucket.this["landing"].name
}

output "processed_bucket" {
  description = "Name of the processed data bucket."
  value       = google_storage_bucket.this["processed"].name
}

output "models_bucket" {
  description = "Name of the model registry bucket."
  value       = google_storage_bucket.this["models"].name
}

output "pipeline_root_bucket" {
  description = "Name of the Vertex AI Pipelines root bucket."
  value       = google_storage_bucket.this["pipeline_root"].name
}

output "dataflow_bucket" {
  description = "Name of the Dataflow temp/staging/templates bucket."
  value       = google_storage_bucket.this["dataflow"].name
}

output "buckets" {
  description = "Every bucket name by purpose (landing, processed, models, pipeline_root, dataflow)."
  value       = { for purpose, bucket in google_storage_bucket.this : purpose => bucket.name }
}
