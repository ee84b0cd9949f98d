# The environment's parameters. The roots give every one of them (their own
# variables hold the defaults), so none has a default here.

variable "env" {
  description = "Environment name, such as dev or prod: names are aisle-<env>, the dataset aisle_<env>, and every resource gets the label env=<env>."
  type        = string

  validation {
    condition     = can(regex("^[a-z][a-z0-9]*$", var.env))
    error_message = "env must be lower-case letters and digits, starting with a letter, such as dev."
  }
}

variable "project_id" {
  description = "The Google Cloud project to build the environment in (it must exist and have billing)."
  type        = string
}

variable "region" {
  description = "Region of the buckets, Dataflow jobs, Vertex AI runs, Artifact Registry and schedules."
  type        = string
}

variable "bigquery_location" {
  description = "BigQuery dataset location; a region or multi-region that contains region (such as EU for europe-west1)."
  type        = string
}

variable "labels" {
  description = "Extra labels for every labelled resource; app, env and managed-by are always added."
  type        = map(string)
}

variable "image_tag" {
  description = "Tag of the aisle image the flex templates and workers use."
  type        = string
}

variable "kms_key_name" {
  description = "Cloud KMS key (projects/.../cryptoKeys/...) for buckets, BigQuery, Artifact Registry, Vertex AI and Dataflow; null uses Google-managed keys."
  type        = string
}

variable "private_dataflow_network" {
  description = "Create a VPC for Dataflow workers without public IPs (subnet with Private Google Access); false uses the project's default network."
  type        = bool
}

variable "dataflow_subnet_cidr" {
  description = "IPv4 range of the Dataflow workers' subnet."
  type        = string
}

variable "dataflow_max_workers" {
  description = "Default autoscaling upper bound of Dataflow jobs launched from the flex templates."
  type        = number
}

variable "enable_tensorboard" {
  description = "Create a Vertex AI TensorBoard instance for training runs."
  type        = bool
}

variable "force_destroy" {
  description = "Let terraform destroy delete buckets that still hold objects."
  type        = bool
}

variable "deletion_protection" {
  description = "Protect the BigQuery tables from deletion by Terraform."
  type        = bool
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
}
