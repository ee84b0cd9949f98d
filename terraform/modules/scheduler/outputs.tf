output "jobs" {
  description = "Full names of the scheduler jobs by key."
  value       = { for k, j in google_cloud_scheduler_job.this : k => j.id }
}
