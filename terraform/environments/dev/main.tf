# The dev environment of aisle: a thin root. modules/platform wires the
# modules; everything that differs between environments is a variable (set
# in the tfvars), and names follow aisle-<env>.

module "platform" {
  source = "../../modules/platform"

  env                      = "dev"
  project_id               = var.project_id
  region                   = var.region
  bigquery_location        = var.bigquery_location
  labels                   = var.labels
  image_tag                = var.image_tag
  kms_key_name             = var.kms_key_name
  private_dataflow_network = var.private_dataflow_network
  dataflow_subnet_cidr     = var.dataflow_subnet_cidr
  dataflow_max_workers     = var.dataflow_max_workers
  enable_tensorboard       = var.enable_tensorboard
  force_destroy            = var.force_destroy
  deletion_protection      = var.deletion_protection
  schedules                = var.schedules
}
