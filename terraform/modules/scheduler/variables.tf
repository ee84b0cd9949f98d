variable "project_id" {
  description = "The Google Cloud project the runs start in."
  type        = string
}

variable "region" {
  description = "Region of the scheduler jobs, the Vertex AI pipeline runs and the Dataflow jobs."
  type        = string
}

variable "name_prefix" {
  description = "The environment's name prefix, such as aisle-dev; jobs are <name_prefix>-<key>."
  type        = string
}

variable "labels" {
  description = "Labels put on every pipeline run and Dataflow job the schedules start (with schedule=<key> added)."
  type        = map(string)
}

variable "jobs" {
  description = <<-EOT
    Schedules by key. target: vertex_pipeline or flex_template. template: a
    compiled pipeline name (templates/<name>.yaml in the pipeline root) or a
    flex template name (templates/<name>.json in the Dataflow bucket), or a
    full gs:// or https:// URI. schedule: unix cron, in time_zone.
    parameters: pipeline parameters or flex template parameters.
  EOT
  type = map(object({
    target      = string
    template    = string
    schedule    = string
    time_zone   = optional(string, "Etc/UTC")
    description = optional(string, "")
    parameters  = optional(map(string), {})
    paused      = optional(bool, false)
    max_workers = optional(number, 10)
  }))
  default = {}

  validation {
    condition     = alltrue([for j in values(var.jobs) : contains(["vertex_pipeline", "flex_template"], j.target)])
    error_message = "Every job's target must be vertex_pipeline or flex_template."
  }

  validation {
    condition     = alltrue([for j in values(var.jobs) : length(split(" ", trimspace(j.schedule))) == 5])
    error_message = "Every job's schedule must be a five-field unix cron expression, such as \"0 3 * * *\"."
  }
}

variable "buckets" {
  description = "Bucket names by purpose: landing, processed, models, pipeline_root, dataflow."
  type        = map(string)
}

variable "scheduler_service_account" {
  description = "Email of the account whose OAuth token the scheduler sends."
  type        = string
}

variable "pipelines_service_account" {
  description = "Email of the account Vertex AI pipeline runs run as."
  type        = string
}

variable "dataflow_service_account" {
  description = "Email of the account Dataflow jobs run as."
  type        = string
}

variable "subnetwork" {
  description = "Self link of the Dataflow workers' subnet (private IPs only), or null for the default network."
  type        = string
  default     = null
}

variable "kms_key_name" {
  description = "Cloud KMS key for the pipeline runs and Dataflow jobs; null uses Google-managed keys."
  type        = string
  default     = null
}
