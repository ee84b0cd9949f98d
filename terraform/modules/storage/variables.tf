variable "project_id" {
  description = "The Google Cloud project that owns the buckets; also the first part of every bucket name."
  type        = string
}

variable "name_prefix" {
  description = "The environment's name prefix, such as aisle-dev; buckets are named <project_id>-<name_prefix>-<purpose>."
  type        = string
}

variable "location" {
  description = "Bucket location: the Dataflow/Vertex region (such as europe-west1) keeps data next to the jobs."
  type        = string
}

variable "labels" {
  description = "Labels put on every bucket."
  type        = map(string)
}

variable "kms_key_name" {
  description = "Cloud KMS key (projects/.../cryptoKeys/...) for default encryption of every bucket; null uses Google-managed keys."
  type        = string
  default     = null
}

variable "force_destroy" {
  description = "Let terraform destroy delete buckets that still hold objects. Keep false where data matters."
  type        = bool
  default     = false
}

variable "landing_nearline_after_days" {
  description = "Age in days after which landed raw files move to the NEARLINE storage class."
  type        = number
  default     = 30
}

variable "noncurrent_version_retention_days" {
  description = "Days a replaced or deleted object version is kept in the landing and processed buckets."
  type        = number
  default     = 30
}

variable "model_noncurrent_version_retention_days" {
  description = "Days a replaced or deleted object version is kept in the models bucket."
  type        = number
  default     = 365
}

variable "pipeline_run_retention_days" {
  description = "Days Vertex AI Pipelines run artifacts (under runs/ in the pipeline root) are kept."
  type        = number
  default     = 30
}

variable "dataflow_temp_retention_days" {
  description = "Days Dataflow temp files (under temp/) are kept."
  type        = number
  default     = 7
}

variable "dataflow_staging_retention_days" {
  description = "Days Dataflow staged files (under staging/) are kept."
  type        = number
  default     = 30
}
