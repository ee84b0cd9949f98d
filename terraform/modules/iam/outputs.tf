output "dataflow_service_account" {
  description = "Email of the Dataflow worker service account."
  value       = google_service_account.this["dataflow"].email
}

output "pipelines_service_account" {
  description = "Email of the Vertex AI pipelines service account."
  value       = google_service_account.this["pipelines"].email
}

output "scheduler_service_account" {
  description = "Email of the Cloud Scheduler service account."
  value       = google_service_account.this["scheduler"].email
}

output "service_accounts" {
  description = "Every service account email by role (dataflow, pipelines, scheduler)."
  value       = { for k, sa in google_service_account.this : k => sa.email }
}
