# aisle's service accounts and every permission they hold, in one place.
#
# dataflow  : runs Dataflow workers (and the flex template launcher VM).
# pipelines : runs Vertex AI pipeline steps; launches Dataflow jobs as the
#             dataflow account.
# scheduler : Cloud Scheduler calls the Vertex AI / Dataflow REST APIs with an
#             OAuth token of this account to start the scheduled runs.
#
# Least privilege: predefined roles only (no basic roles), granted on the
# bucket, dataset, repository or service account they are needed on; only
# what has no narrower scope is granted on the project.

locals {
  accounts = {
    dataflow  = "Dataflow workers of the aisle ${var.name_prefix} jobs"
    pipelines = "Vertex AI pipeline steps of ${var.name_prefix}"
    scheduler = "Cloud Scheduler jobs that start ${var.name_prefix} runs"
  }

  schedules_vertex = contains(var.scheduler_targets, "vertex_pipeline")
  schedules_flex   = contains(var.scheduler_targets, "flex_template")

  # account => project-level roles. These roles have no narrower resource
  # to be granted on (job creation, logs, metrics).
  project_roles = {
    dataflow = [
      "roles/dataflow.worker",          # run work items of its jobs
      "roles/bigquery.jobUser",         # BigQuery load/query jobs of the sinks
      "roles/bigquery.readSessionUser", # BigQuery Storage Read API reads
      "roles/logging.logWriter",
      "roles/monitoring.metricWriter",
    ]
    pipelines = [
      "roles/aiplatform.user",  # pipeline steps, custom jobs, Model Registry
      "roles/dataflow.developer", # launch and watch Dataflow jobs
      "roles/compute.viewer",   # Dataflow job creation reads zones and machine types
      "roles/bigquery.jobUser",
      "roles/logging.logWriter",
    ]
    scheduler = concat(
      local.schedules_vertex ? ["roles/aiplatform.user"] : [],                          # create pipelineJobs
      local.schedules_flex ? ["roles/dataflow.developer", "roles/compute.viewer"] : [], # flexTemplates.launch
    )
  }

  # bucket purpose => account => roles on that bucket.
  # objectViewer: read; objectUser: read, write and delete objects;
  # legacyBucketReader: bucket metadata, which Beam and Vertex read to check
  # their temp and root locations.
  bucket_roles = {
    landing = {
      dataflow  = ["roles/storage.objectViewer"]
      pipelines = ["roles/storage.objectViewer"]
    }
    processed = {
      dataflow  = ["roles/storage.objectUser"]
      pipelines = ["roles/storage.objectUser"]
    }
    models = {
      dataflow  = ["roles/storage.objectViewer"]
      pipelines = ["roles/storage.objectUser"]
    }
    pipeline_root = {
      dataflow  = ["roles/storage.objectUser"]
      pipelines = ["roles/storage.objectUser", "roles/storage.legacyBucketReader"]
      scheduler = local.schedules_vertex ? ["roles/storage.objectViewer"] : [] # compiled pipeline templates
    }
    dataflow = {
      dataflow  = ["roles/storage.objectUser", "roles/storage.legacyBucketReader"]
      pipelines = ["roles/storage.objectUser", "roles/storage.legacyBucketReader"]
      scheduler = local.schedules_flex ? ["roles/storage.objectViewer"] : [] # flex template specs
    }
  }

  # service account => accounts that may act as it (roles/iam.serviceAccountUser).
  act_as = {
    # Pipeline steps launch Dataflow jobs that run as the dataflow account,
    # and Vertex sub-jobs (custom jobs) that run as the pipelines account.
    dataflow  = concat(["pipelines"], local.schedules_flex ? ["scheduler"] : [])
    pipelines = concat(["pipelines"], local.schedules_vertex ? ["scheduler"] : [])
  }

  project_bindings = merge([
    for account, roles in local.project_roles : {
      for role in roles : "${account} ${role}" => { account = account, role = role }
    }
  ]...)

  bucket_bindings = merge(flatten([
    for bucket, grants in local.bucket_roles : [
      for account, roles in grants : {
        for role in roles : "${bucket} ${account} ${role}" => { bucket = var.buckets[bucket], account = account, role = role }
      }
    ]
  ])...)

  act_as_bindings = merge([
    for target, callers in local.act_as : {
      for caller in callers : "${caller} on ${target}" => { target = target, caller = caller }
    }
  ]...)
}

resource "google_service_account" "this" {
  for_each = local.accounts

  project      = var.project_id
  account_id   = "${var.name_prefix}-${each.key}"
  display_name = "${var.name_prefix}-${each.key}"
  description  = each.value
}

resource "google_project_iam_member" "this" {
  for_each = local.project_bindings

  project = var.project_id
  role    = each.value.role
  member  = google_service_account.this[each.value.account].member
}

resource "google_storage_bucket_iam_member" "this" {
  for_each = local.bucket_bindings

  bucket = each.value.bucket
  role   = each.value.role
  member = google_service_account.this[each.value.account].member
}

resource "google_bigquery_dataset_iam_member" "editor" {
  for_each = toset(["dataflow", "pipelines"])

  project    = var.project_id
  dataset_id = var.dataset_id
  role       = "roles/bigquery.dataEditor"
  member     = google_service_account.this[each.value].member
}

resource "google_artifact_registry_repository_iam_member" "reader" {
  for_each = toset(["dataflow", "pipelines"])

  project    = var.project_id
  location   = var.artifact_registry_location
  repository = var.artifact_registry_repository
  role       = "roles/artifactregistry.reader"
  member     = google_service_account.this[each.value].member
}

resource "google_service_account_iam_member" "act_as" {
  for_each = local.act_as_bindings

  service_account_id = google_service_account.this[each.value.target].name
  role               = "roles/iam.serviceAccountUser"
  member             = google_service_account.this[each.value.caller].member
}
