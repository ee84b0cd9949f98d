variable "project_id" {
  description = "The Google Cloud project to build the environment in (it must exist and have billing)."
  type        = string
}

variable "region" {
  description = "Region of the buckets, Dataflow jobs, Vertex AI runs, Artifact Registry and schedules."
  type        = string
  default     = "europe-west1"
}

variable "bigquery_location" {
  description = "BigQuery dataset location; a region or multi-region that contains region (such as EU for europe-west1)."
  type        = string
  default     = "EU"
}

variable "labels" {
  description = "Extra labels for every labelled resource; app, env and managed-by are always added."
  type        = map(string)
  default     = {}
}

variable "image_tag" {
  description = "Tag of the aisle image the flex templates and workers use."
  type        = string
  default     = "latest"
}

variable "kms_key_name" {
  description = "Cloud KMS key (projects/.../cryptoKeys/...) for buckets, BigQuery, Artifact Registry, Vertex AI and Dataflow; null uses Google-managed keys."
  type        = string
  default     = null
}

variable "private_dataflow_network" {
  description = "Create a VPC for Dataflow workers without public IPs (subnet with Private Google Access); false uses the project's default network."
  type        = bool
  default     = true
}

variable "dataflow_subnet_cidr" {
  description = "IPv4 range of the Dataflow workers' subnet."
  type        = string
  default     = "10.10.0.0/20"
}

variable "dataflow_max_workers" {
  description = "Default autoscaling upper bound of Dataflow jobs launched from the flex templates."
  type        = number
  default     = 10
}

variable "enable_tensorboard" {
  description = "Create a Vertex AI TensorBoard instance for training runs."
  type        = bool
  default     = false
}

variable "force_destroy" {
  description = "Let terraform destroy delete buckets that still hold objects."
  type        = bool
  default     = false
}

variable "deletion_protection" {
  description = "Protect the BigQuery tables from deletion by Terraform."
  type        = bool
  default     = true
}

variable "schedules" {
  description = "Cloud Scheduler jobs by key (see modules/scheduler for the fields): what to start, on which cron, with which parameters."
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
}
