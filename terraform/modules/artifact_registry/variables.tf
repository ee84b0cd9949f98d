variable "project_id" {
  description = "The Google Cloud project that owns the repository."
  type        = string
}

variable "location" {
  description = "Repository region, such as europe-west1; images are <location>-docker.pkg.dev/<project>/<repository_id>/..."
  type        = string
}

variable "repository_id" {
  description = "Repository name."
  type        = string
  default     = "aisle"
}

variable "labels" {
  description = "Labels put on the repository."
  type        = map(string)
}

variable "kms_key_name" {
  description = "Cloud KMS key to encrypt the repository (must be in the repository's region); null uses Google-managed keys. Fixed at creation."
  type        = string
  default     = null
}

variable "keep_recent_versions" {
  description = "Number of most recent image versions always kept by the cleanup policy."
  type        = number
  default     = 20
}

variable "untagged_retention_days" {
  description = "Days after which an untagged image version is deleted."
  type        = number
  default     = 30
}
