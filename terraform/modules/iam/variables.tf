variable "project_id" {
  description = "The Google Cloud project of the service accounts."
  type        = string
}

variable "name_prefix" {
  description = "The environment's name prefix, such as aisle-dev; accounts are <name_prefix>-dataflow, -pipelines and -scheduler (at most 30 characters)."
  type        = string

  validation {
    condition     = length(var.name_prefix) <= 20 && can(regex("^[a-z][a-z0-9-]*$", var.name_prefix))
    error_message = "name_prefix must be lower-case letters, digits and dashes, at most 20 characters, so that <name_prefix>-pipelines fits a service account id."
  }
}

variable "buckets" {
  description = "Bucket names by purpose: landing, processed, models, pipeline_root, dataflow (the storage module's buckets output)."
  type        = map(string)

  validation {
    condition     = length(setsubtract(["landing", "processed", "models", "pipeline_root", "dataflow"], keys(var.buckets))) == 0
    error_message = "buckets needs the keys landing, processed, models, pipeline_root and dataflow."
  }
}

variable "dataset_id" {
  description = "The BigQuery dataset the dataflow and pipelines accounts write to."
  type        = string
}

variable "artifact_registry_location" {
  description = "Region of the Artifact Registry repository holding the aisle image."
  type        = string
}

variable "artifact_registry_repository" {
  description = "Name of the Artifact Registry repository holding the aisle image."
  type        = string
}

variable "scheduler_targets" {
  description = "What the Cloud Scheduler jobs start: any of vertex_pipeline, flex_template. The scheduler account gets only the roles these need."
  type        = set(string)
  default     = []

  validation {
    condition     = length(setsubtract(var.scheduler_targets, ["vertex_pipeline", "flex_template"])) == 0
    error_message = "scheduler_targets may hold only vertex_pipeline and flex_template."
  }
}
