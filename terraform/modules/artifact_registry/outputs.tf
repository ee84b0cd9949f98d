output "repository_id" {
  description = "The repository name."
  value       = google_artifact_registry_repository.this.repository_id
}

output "repository_url" {
  description = "Docker path of the repository: <location>-docker.pkg.dev/<project>/<repository_id>."
  value       = "${var.location}-docker.pkg.dev/${var.project_id}/${google_artifact_registry_repository.this.repository_id}"
}

output "image" {
  description = "The aisle image without its tag: <repository_url>/aisle."
  value       = "${var.location}-docker.pkg.dev/${var.project_id}/${google_artifact_registry_repository.this.repository_id}/aisle"
}
