# The aisle dataset and the tables the ingest job writes. Schemas are the
# Retail API's BigQuery import schemas (schemas/*.json), so a table can be
# imported into Retail unchanged; they mirror transforms/records.py.

resource "google_bigquery_dataset" "this" {
  #checkov:skip=CKV_GCP_81:CMEK is optional: set kms_key_name to encrypt the dataset with a customer-managed key; by default Google-managed keys encrypt it.
  project                    = var.project_id
  dataset_id                 = var.dataset_id
  friendly_name              = var.dataset_id
  description                = "aisle: validated catalog, user events and dead letters."
  location                   = var.location
  delete_contents_on_destroy = false
  labels                     = var.labels

  dynamic "default_encryption_configuration" {
    for_each = var.kms_key_name == null ? [] : [var.kms_key_name]
    content {
      kms_key_name = default_encryption_configuration.value
    }
  }
}

# The tables: one google_bigquery_table.this[<table_id>] per entry of
# local.tables. partitioning null: not partitioned; field null: partitioned
# by ingestion time.
locals {
  schemas = "${path.module}/schemas"

  tables = {
    # The catalog: one row per Product (Retail API Product import schema).
    products = {
      description  = "Catalog items in the Retail API Product import schema."
      schema       = "products.json"
      partitioning = null
      clustering   = ["id"]
    }

    # User events (Retail API UserEvent import schema), one partition a day.
    user_events = {
      description  = "User events in the Retail API UserEvent import schema, partitioned by eventTime day."
      schema       = "user_events.json"
      partitioning = { field = "eventTime", expiration_ms = null }
      clustering   = ["eventType"]
    }

    # Cancelled order lines: UserEvent rows kept apart from the events that
    # feed the recommenders, same schema and partitioning.
    cancellations = {
      description  = "Cancelled order lines as Retail API UserEvents, partitioned by eventTime day."
      schema       = "user_events.json"
      partitioning = { field = "eventTime", expiration_ms = null }
      clustering   = ["eventType"]
    }

    # Records that could not become a valid output: source, raw record and a
    # reason code. Partitioned by ingestion time; old partitions expire.
    dead_letters = {
      description  = "Rejected input records with their source, raw text and reason code, partitioned by ingestion day."
      schema       = "dead_letters.json"
      partitioning = { field = null, expiration_ms = var.dead_letter_retention_days * 24 * 60 * 60 * 1000 }
      clustering   = ["reason"]
    }
  }
}

resource "google_bigquery_table" "this" {
  #checkov:skip=CKV_GCP_80:CMEK is optional (kms_key_name); when set, the dataset's default_encryption_configuration encrypts this table.
  for_each = local.tables

  project             = var.project_id
  dataset_id          = google_bigquery_dataset.this.dataset_id
  table_id            = each.key
  description         = each.value.description
  deletion_protection = var.deletion_protection
  labels              = var.labels
  schema              = file("${local.schemas}/${each.value.schema}")

  dynamic "time_partitioning" {
    for_each = each.value.partitioning == null ? [] : [each.value.partitioning]
    content {
      type          = "DAY"
      field         = time_partitioning.value.field
      expiration_ms = time_partitioning.value.expiration_ms
    }
  }

  clustering = each.value.clustering
}
