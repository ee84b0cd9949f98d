output "metadata_store" {
  description = "Resource name of the metadata store Terraform created, or null when Vertex manages the default one."
  value       = one(google_vertex_ai_metadata_store.default[*].id)
}

output "tensorboard" {
  description = "Resource name of the TensorBoard instance, or null when none was asked for."
  value       = one(google_vertex_ai_tensorboard.this[*].id)
}
