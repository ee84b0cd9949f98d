output "specs" {
  description = "gs:// path of each job's flex template spec, by job name."
  value       = { for job, obj in google_storage_bucket_object.spec : job => "gs://${obj.bucket}/${obj.name}" }
}
