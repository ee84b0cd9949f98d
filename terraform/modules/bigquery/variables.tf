variable "project_id" {
  description = "The Google Cloud project that owns the dataset."
  type        = string
}

variable "dataset_id" {
  description = "BigQuery dataset id, such as aisle_dev (letters, digits and underscores)."
  type        = string

  validation {
    condition     = can(regex("^[A-Za-z_][A-Za-z0-9_]{0,1023}$", var.dataset_id))
    error_message = "dataset_id must be letters, digits and underscores, such as aisle_dev."
  }
}

variable "location" {
  description = "Dataset location: a region (such as europe-west1) or a multi-region (EU, US); keep it where the buckets are."
  type        = string
}

variable "labels" {
  description = "Labels put on the dataset and every table."
  type        = map(string)
}

variable "kms_key_name" {
  description = "Cloud KMS key for the dataset's default encryption; null uses Google-managed keys."
  type        = string
  default     = null
}

variable "deletion_protection" {
  description = "Refuse to delete the tables on terraform destroy or replacement."
  type        = bool
  default     = true
}

variable "dead_letter_retention_days" {
  description = "Days a dead_letters partition is kept before it expires."
  type        = number
  default     = 90
}
