# Cloud Scheduler jobs that start aisle's scheduled runs. Each job calls a
# Google REST API with an OAuth token of the scheduler service account:
#
# vertex_pipeline: POST .../pipelineJobs creates a Vertex AI pipeline run of
#                  a compiled KFP pipeline (templates/<name>.yaml in the
#                  pipeline root bucket), running as the pipelines account.
# flex_template:   POST .../flexTemplates:launch starts a Dataflow job from a
#                  flex template spec, running as the dataflow account.
#
# Parameter values may name the buckets as {landing}, {processed},
# {models}, {pipeline_root} and {dataflow}; they are replaced by gs:// URIs.

locals {
  vertex_uri = "https://${var.region}-aiplatform.googleapis.com/v1/projects/${var.project_id}/locations/${var.region}/pipelineJobs"
  flex_uri   = "https://dataflow.googleapis.com/v1b3/projects/${var.project_id}/locations/${var.region}/flexTemplates:launch"

  parameters = {
    for name, job in var.jobs : name => merge(
      # One image serves every aisle flex template; its launcher reads the
      # job to run from the `job` parameter (see flex_templates/*.json).
      job.target == "flex_template" && !local.is_uri[name] ? { job = job.template } : {},
      {
        for k, v in job.parameters : k => replace(replace(replace(replace(replace(v,
          "{landing}", "gs://${var.buckets.landing}"),
          "{processed}", "gs://${var.buckets.processed}"),
          "{models}", "gs://${var.buckets.models}"),
          "{pipeline_root}", "gs://${var.buckets.pipeline_root}"),
        "{dataflow}", "gs://${var.buckets.dataflow}")
      },
    )
  }

  is_uri = { for name, job in var.jobs : name => can(regex("^(gs|https)://", job.template)) }

  # A bare name is a template published by this platform; a gs:// or
  # https:// URI is used as it is.
  template = {
    for name, job in var.jobs : name => (
      local.is_uri[name] ? job.template :
      job.target == "vertex_pipeline" ? "gs://${var.buckets.pipeline_root}/templates/${job.template}.yaml" :
      "gs://${var.buckets.dataflow}/templates/${job.template}.json"
    )
  }

  # The request body of each job, as JSON.
  vertex_requests = {
    for name, job in var.jobs : name => jsonencode(merge(
      {
        displayName    = "${var.name_prefix}-${name}"
        templateUri    = local.template[name]
        serviceAccount = var.pipelines_service_account
        labels         = merge(var.labels, { schedule = name })
        runtimeConfig = {
          gcsOutputDirectory = "gs://${var.buckets.pipeline_root}/runs"
          parameterValues    = local.parameters[name]
        }
      },
      var.kms_key_name == null ? {} : { encryptionSpec = { kmsKeyName = var.kms_key_name } },
    )) if job.target == "vertex_pipeline"
  }

  flex_requests = {
    for name, job in var.jobs : name => jsonencode({
      launchParameter = {
        jobName              = "${var.name_prefix}-${name}"
        containerSpecGcsPath = local.template[name]
        parameters           = local.parameters[name]
        environment = merge(
          {
            serviceAccountEmail  = var.dataflow_service_account
            tempLocation         = "gs://${var.buckets.dataflow}/temp"
            stagingLocation      = "gs://${var.buckets.dataflow}/staging"
            maxWorkers           = job.max_workers
            additionalUserLabels = merge(var.labels, { schedule = name })
          },
          var.subnetwork == null ? {} : { subnetwork = var.subnetwork, ipConfiguration = "WORKER_IP_PRIVATE" },
          var.kms_key_name == null ? {} : { kmsKeyName = var.kms_key_name },
        )
      }
    }) if job.target == "flex_template"
  }

  requests = merge(local.vertex_requests, local.flex_requests)
}

resource "google_cloud_scheduler_job" "this" {
  for_each = var.jobs

  project          = var.project_id
  region           = var.region
  name             = "${var.name_prefix}-${each.key}"
  description      = each.value.description
  schedule         = each.value.schedule
  time_zone        = each.value.time_zone
  paused           = each.value.paused
  attempt_deadline = "320s"

  # The runs are idempotent, so one retry after a failed call is safe.
  retry_config {
    retry_count          = 1
    min_backoff_duration = "60s"
  }

  http_target {
    http_method = "POST"
    uri         = each.value.target == "vertex_pipeline" ? local.vertex_uri : local.flex_uri
    headers     = { "Content-Type" = "application/json" }
    body        = base64encode(local.requests[each.key])

    oauth_token {
      service_account_email = var.scheduler_service_account
      scope                 = "https://www.googleapis.com/auth/cloud-platform"
    }
  }
}
