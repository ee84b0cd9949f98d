# One aisle environment: wires the modules together. The environment roots
# (environments/<env>) call it with their variables; everything that differs
# between environments is a variable, and names follow aisle-<env>.

locals {
  env         = var.env
  name_prefix = "aisle-${local.env}"
  labels = merge(var.labels, {
    app        = "aisle"
    env        = local.env
    managed-by = "terraform"
  })
  image             = "${module.artifact_registry.image}:${var.image_tag}"
  dataflow_subnet   = one(module.network[*].subnetwork) # null without the private network
  scheduler_targets = toset([for j in values(var.schedules) : j.target])
}

module "project_services" {
  source = "../project_services"

  project_id = var.project_id
}

module "cmek" {
  source = "../cmek"
  count  = var.kms_key_name == null ? 0 : 1

  project_id   = var.project_id
  kms_key_name = var.kms_key_name

  depends_on = [module.project_services]
}

module "storage" {
  source = "../storage"

  project_id    = var.project_id
  name_prefix   = local.name_prefix
  location      = var.region
  labels        = local.labels
  kms_key_name  = var.kms_key_name
  force_destroy = var.force_destroy

  depends_on = [module.project_services, module.cmek]
}

module "bigquery" {
  source = "../bigquery"

  project_id          = var.project_id
  dataset_id          = replace(local.name_prefix, "-", "_")
  location            = var.bigquery_location
  labels              = local.labels
  kms_key_name        = var.kms_key_name
  deletion_protection = var.deletion_protection

  depends_on = [module.project_services, module.cmek]
}

module "artifact_registry" {
  source = "../artifact_registry"

  project_id    = var.project_id
  location      = var.region
  repository_id = "aisle"
  labels        = local.labels
  kms_key_name  = var.kms_key_name

  depends_on = [module.project_services, module.cmek]
}

module "iam" {
  source = "../iam"

  project_id                   = var.project_id
  name_prefix                  = local.name_prefix
  buckets                      = module.storage.buckets
  dataset_id                   = module.bigquery.dataset_id
  artifact_registry_location   = var.region
  artifact_registry_repository = module.artifact_registry.repository_id
  scheduler_targets            = local.scheduler_targets

  depends_on = [module.project_services]
}

module "network" {
  source = "../network"
  count  = var.private_dataflow_network ? 1 : 0

  project_id  = var.project_id
  name_prefix = local.name_prefix
  region      = var.region
  subnet_cidr = var.dataflow_subnet_cidr

  depends_on = [module.project_services]
}

module "vertex" {
  source = "../vertex"

  project_id         = var.project_id
  name_prefix        = local.name_prefix
  region             = var.region
  labels             = local.labels
  kms_key_name       = var.kms_key_name
  enable_tensorboard = var.enable_tensorboard

  depends_on = [module.project_services, module.cmek]
}

module "flex_templates" {
  source = "../flex_templates"

  bucket                = module.storage.dataflow_bucket
  image                 = local.image
  service_account_email = module.iam.dataflow_service_account
  labels                = local.labels
  subnetwork            = local.dataflow_subnet
  kms_key_name          = var.kms_key_name
  max_workers           = var.dataflow_max_workers
}

module "scheduler" {
  source = "../scheduler"

  project_id                = var.project_id
  region                    = var.region
  name_prefix               = local.name_prefix
  labels                    = local.labels
  jobs                      = var.schedules
  buckets                   = module.storage.buckets
  scheduler_service_account = module.iam.scheduler_service_account
  pipelines_service_account = module.iam.pipelines_service_account
  dataflow_service_account  = module.iam.dataflow_service_account
  subnetwork                = local.dataflow_subnet
  kms_key_name              = var.kms_key_name

  # The scheduler account must hold its roles before the first run fires.
  depends_on = [module.project_services, module.iam, module.flex_templates]
}
