variable "bucket" {
  description = "The Dataflow bucket: specs go to templates/, jobs use temp/ and staging/."
  type        = string
}

variable "image" {
  description = "The container image with its tag: <region>-docker.pkg.dev/<project>/aisle/aisle:<tag>. It is both the launcher and the workers' SDK container."
  type        = string
}

variable "jobs" {
  description = "Jobs to publish a spec for; each needs terraform/flex_templates/<job>.json."
  type        = list(string)
  default     = ["ingest", "batch"]
}

variable "service_account_email" {
  description = "Service account the launcher and the workers run as."
  type        = string
}

variable "labels" {
  description = "Labels put on every Dataflow job launched from these templates."
  type        = map(string)
}

variable "subnetwork" {
  description = "Self link of the workers' subnet; when set, workers get private IPs only. Null uses the default network with public IPs."
  type        = string
  default     = null
}

variable "kms_key_name" {
  description = "Cloud KMS key for the jobs' state (disks, shuffle, temp files); null uses Google-managed keys."
  type        = string
  default     = null
}

variable "max_workers" {
  description = "Default upper bound of autoscaling, in workers."
  type        = number
  default     = 10
}
