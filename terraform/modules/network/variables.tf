variable "project_id" {
  description = "The Google Cloud project of the network."
  type        = string
}

variable "name_prefix" {
  description = "The environment's name prefix, such as aisle-dev."
  type        = string
}

variable "region" {
  description = "Region of the subnet: the region Dataflow jobs run in."
  type        = string
}

variable "subnet_cidr" {
  description = "Primary IPv4 range of the workers' subnet; it bounds how many workers can run at once."
  type        = string
  default     = "10.10.0.0/20"

  validation {
    condition     = can(cidrhost(var.subnet_cidr, 0))
    error_message = "subnet_cidr must be an IPv4 CIDR range such as 10.10.0.0/20."
  }
}

variable "flow_log_sampling" {
  description = "Fraction (0 to 1) of the subnet's flows recorded in VPC flow logs."
  type        = number
  default     = 0.5
}
