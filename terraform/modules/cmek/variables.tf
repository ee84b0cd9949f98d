variable "project_id" {
  description = "The Google Cloud project whose service agents use the key."
  type        = string
}

variable "kms_key_name" {
  description = "Cloud KMS key, projects/<p>/locations/<region>/keyRings/<ring>/cryptoKeys/<key>, in the region of the buckets, dataset and repository."
  type        = string

  validation {
    condition     = can(regex("^projects/[^/]+/locations/[^/]+/keyRings/[^/]+/cryptoKeys/[^/]+$", var.kms_key_name))
    error_message = "kms_key_name must look like projects/<p>/locations/<region>/keyRings/<ring>/cryptoKeys/<key>."
  }
}
