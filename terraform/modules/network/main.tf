# A VPC for Dataflow workers without public IP addresses: one subnet with
# Private Google Access (workers reach GCS, BigQuery, Artifact Registry and
# the Dataflow service on Google's network) and a firewall rule for
# worker-to-worker traffic (shuffle/data exchange on TCP 12345-12346).
# The container image holds every dependency, so workers need no internet
# egress and no Cloud NAT.

resource "google_compute_network" "this" {
  project                 = var.project_id
  name                    = "${var.name_prefix}-dataflow"
  description             = "Network of the ${var.name_prefix} Dataflow workers."
  auto_create_subnetworks = false
  routing_mode            = "REGIONAL"
}

resource "google_compute_subnetwork" "this" {
  #checkov:skip=CKV_GCP_76:The subnet is IPv4 only; IPv6 Private Google Access does not apply.
  project                  = var.project_id
  name                     = "${var.name_prefix}-dataflow-${var.region}"
  description              = "Dataflow workers of ${var.name_prefix}, private IPs only."
  region                   = var.region
  network                  = google_compute_network.this.id
  ip_cidr_range            = var.subnet_cidr
  private_ip_google_access = true

  log_config {
    aggregation_interval = "INTERVAL_10_MIN"
    flow_sampling        = var.flow_log_sampling
    metadata             = "INCLUDE_ALL_METADATA"
  }
}

# Dataflow tags its worker VMs "dataflow"; workers exchange data with each
# other on these ports. Nothing else may connect to them.
resource "google_compute_firewall" "dataflow_internal" {
  project     = var.project_id
  name        = "${var.name_prefix}-dataflow-internal"
  description = "Worker-to-worker traffic of Dataflow jobs."
  network     = google_compute_network.this.id
  direction   = "INGRESS"
  priority    = 1000
  source_tags = ["dataflow"]
  target_tags = ["dataflow"]

  allow {
    protocol = "tcp"
    ports    = ["12345-12346"]
  }

  log_config {
    metadata = "INCLUDE_ALL_METADATA"
  }
}
