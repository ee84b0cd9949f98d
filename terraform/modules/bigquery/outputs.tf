output "dataset_id" {
  description = "The dataset id (without the project)."
  value       = google_bigquery_dataset.this.dataset_id
}

output "tables" {
  description = "Fully qualified table ids (project.dataset.table) by table name."
  value       = { for t in google_bigquery_table.this : t.table_id => "${t.project}.${t.dataset_id}.${t.table_id}" }
}
