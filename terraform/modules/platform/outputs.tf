# Every name of the environment; the roots pass them all through as their
# outputs, which the aisle CLI's cloud configuration reads.

output "project_id" {
  description = "The Google Cloud project."
  value       = var.project_id
}

output "region" {
  description = "The region of the jobs and runs."
  value       = var.region
}

output "env" {
  description = "The environment name."
  value       = local.env
}

output "name_prefix" {
  description = "Prefix of every resource name: aisle-<env>."
  value       = local.name_prefix
}

output "buckets" {
  description = "Bucket names by purpose: landing, processed, models, pipeline_root, dataflow."
  value       = module.storage.buckets
}

output "landing_bucket" {
  description = "Bucket for raw input files."
  value       = module.storage.landing_bucket
}

output "processed_bucket" {
  description = "Bucket for validated, enriched and recommendation outputs."
  value       = module.storage.processed_bucket
}

output "models_bucket" {
  description = "Bucket of the model registry."
  value       = module.storage.models_bucket
}

output "pipeline_root" {
  description = "Vertex AI Pipelines root (gcsOutputDirectory) for pipeline runs."
  value       = "gs://${module.storage.pipeline_root_bucket}/runs"
}

output "pipeline_templates" {
  description = "Folder the compiled KFP pipeline YAML files are uploaded to."
  value       = "gs://${module.storage.pipeline_root_bucket}/templates"
}

output "dataflow_temp_location" {
  description = "Dataflow --temp_location."
  value       = "gs://${module.storage.dataflow_bucket}/temp"
}

output "dataflow_staging_location" {
  description = "Dataflow --staging_location."
  value       = "gs://${module.storage.dataflow_bucket}/staging"
}

output "bigquery_dataset" {
  description = "BigQuery dataset id: aisle_<env>."
  value       = module.bigquery.dataset_id
}

output "bigquery_tables" {
  description = "Fully qualified BigQuery table ids by table name."
  value       = module.bigquery.tables
}

output "artifact_registry_repository" {
  description = "Docker repository path: <region>-docker.pkg.dev/<project>/aisle."
  value       = module.artifact_registry.repository_url
}

output "image" {
  description = "The aisle image with the tag the templates use."
  value       = local.image
}

output "service_accounts" {
  description = "Service account emails by role: dataflow, pipelines, scheduler."
  value       = module.iam.service_accounts
}

output "dataflow_service_account" {
  description = "Service account Dataflow workers run as (--service_account_email)."
  value       = module.iam.dataflow_service_account
}

output "pipelines_service_account" {
  description = "Service account Vertex AI pipeline runs run as."
  value       = module.iam.pipelines_service_account
}

output "scheduler_service_account" {
  description = "Service account of the Cloud Scheduler jobs."
  value       = module.iam.scheduler_service_account
}

output "dataflow_subnetwork" {
  description = "Subnet self link for Dataflow workers without public IPs (--subnetwork with --no_use_public_ips), or null."
  value       = local.dataflow_subnet
}

output "flex_templates" {
  description = "gs:// paths of the flex template specs by job name."
  value       = module.flex_templates.specs
}

output "scheduler_jobs" {
  description = "Cloud Scheduler job names by key."
  value       = module.scheduler.jobs
}

output "kms_key_name" {
  description = "The CMEK key in use, or null."
  value       = var.kms_key_name
}

output "tensorboard" {
  description = "Vertex AI TensorBoard resource name, or null."
  value       = module.vertex.tensorboard
}
