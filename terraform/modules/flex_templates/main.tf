# Dataflow flex template specs for aisle's jobs, written to the Dataflow
# bucket. A spec names the container image and the job's parameters
# (terraform/flex_templates/<job>.json); this is the file that
# `gcloud dataflow flex-template build --metadata-file ... --image ...`
# would write, kept here so the image tag and the defaults are reviewed
# with the rest of the platform.

locals {
  metadata_dir = "${path.module}/../../flex_templates"

  # The launch defaults every job gets; a launch request may override them.
  default_environment = merge(
    {
      serviceAccountEmail  = var.service_account_email
      tempLocation         = "gs://${var.bucket}/temp"
      stagingLocation      = "gs://${var.bucket}/staging"
      sdkContainerImage    = var.image
      additionalUserLabels = var.labels
      maxWorkers           = var.max_workers
    },
    var.subnetwork == null ? {} : {
      subnetwork      = var.subnetwork
      ipConfiguration = "WORKER_IP_PRIVATE"
    },
    var.kms_key_name == null ? {} : {
      kmsKeyName = var.kms_key_name
    },
  )
}

resource "google_storage_bucket_object" "spec" {
  for_each = toset(var.jobs)

  bucket       = var.bucket
  name         = "templates/${each.value}.json"
  content_type = "application/json"
  content = jsonencode({
    image              = var.image
    sdkInfo            = { language = "PYTHON" }
    metadata           = jsondecode(file("${local.metadata_dir}/${each.value}.json"))
    defaultEnvironment = local.default_environment
  })
}
