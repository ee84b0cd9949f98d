variable "project_id" {
  description = "The Google Cloud project of the Vertex AI resources."
  type        = string
}

variable "name_prefix" {
  description = "The environment's name prefix, such as aisle-dev."
  type        = string
}

variable "region" {
  description = "Vertex AI region, the same as the pipeline runs'."
  type        = string
}

variable "labels" {
  description = "Labels put on the Vertex AI resources that take labels."
  type        = map(string)
}

variable "kms_key_name" {
  description = "Cloud KMS key (in the Vertex region) for the metadata store and TensorBoard; null uses Google-managed keys and leaves the metadata store to Vertex."
  type        = string
  default     = null
}

variable "enable_tensorboard" {
  description = "Create a Vertex AI TensorBoard instance for training runs."
  type        = bool
  default     = false
}
