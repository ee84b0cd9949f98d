output "services" {
  description = "The APIs that are enabled, sorted."
  value       = sort([for s in google_project_service.this : s.service])
}
