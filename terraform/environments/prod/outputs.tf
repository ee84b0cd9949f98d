# The names the aisle CLI's cloud configuration reads
# (terraform output -json > aisle-cloud.json), from modules/platform.

output "project_id" {
  description = "The Google Cloud project."
  value       = module.platform.project_id
}

output "region" {
  description = "The region of the jobs and runs."
  value       = module.platform.region
}

output "env" {
  description = "The environment name."
  value       = module.platform.env
}

output "name_prefix" {
  description = "Prefix of every resource name: aisle-<env>."
  value       = module.platform.name_prefix
}

output "buckets" {
  description = "Bucket names by purpose: landing, processed, models, pipeline_root, dataflow."
  value       = module.platform.buckets
}

output "landing_bucket" {
  description = "Bucket for raw input files."
  value       = module.platform.landing_bucket
}

output "processed_bucket" {
  description = "Bucket for validated, enriched and recommendation outputs."
  value       = module.platform.processed_bucket
}

output "models_bucket" {
  description = "Bucket of the model registry."
  value       = module.platform.models_bucket
}

output "pipeline_root" {
  description = "Vertex AI Pipelines root (gcsOutputDirectory) for pipeline runs."
  value       = module.platform.pipeline_root
}

output "pipeline_templates" {
  description = "Folder the compiled KFP pipeline YAML files are uploaded to."
  value       = module.platform.pipeline_templates
}

output "dataflow_temp_location" {
  description = "Dataflow --temp_location."
  value       = module.platform.dataflow_temp_location
}

output "dataflow_staging_location" {
  description = "Dataflow --staging_location."
  value       = module.platform.dataflow_staging_location
}

output "bigquery_dataset" {
  description = "BigQuery dataset id: aisle_<env>."
  value       = module.platform.bigquery_dataset
}

output "bigquery_tables" {
  description = "Fully qualified BigQuery table ids by table name."
  value       = module.platform.bigquery_tables
}

output "artifact_registry_repository" {
  description = "Docker repository path: <region>-docker.pkg.dev/<project>/aisle."
  value       = module.platform.artifact_registry_repository
}

output "image" {
  description = "The aisle image with the tag the templates use."
  value       = module.platform.image
}

output "service_accounts" {
  description = "Service account emails by role: dataflow, pipelines, scheduler."
  value       = module.platform.service_accounts
}

output "dataflow_service_account" {
  description = "Service account Dataflow workers run as (--service_account_email)."
  value       = module.platform.dataflow_service_account
}

output "pipelines_service_account" {
  description = "Service account Vertex AI pipeline runs run as."
  value       = module.platform.pipelines_service_account
}

output "scheduler_service_account" {
  description = "Service account of the Cloud Scheduler jobs."
  value       = module.platform.scheduler_service_account
}

output "dataflow_subnetwork" {
  description = "Subnet self link for Dataflow workers without public IPs (--subnetwork with --no_use_public_ips), or null."
  value       = module.platform.dataflow_subnetwork
}

output "flex_templates" {
  description = "gs:// paths of the flex template specs by job name."
  value       = module.platform.flex_templates
}

output "scheduler_jobs" {
  description = "Cloud Scheduler job names by key."
  value       = module.platform.scheduler_jobs
}

output "kms_key_name" {
  description = "The CMEK key in use, or null."
  value       = module.platform.kms_key_name
}

output "tensorboard" {
  description = "Vertex AI TensorBoard resource name, or null."
  value       = module.platform.tensorboard
}
