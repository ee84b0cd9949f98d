output "network" {
  description = "Self link of the network."
  value       = google_compute_network.this.self_link
}

output "subnetwork" {
  description = "Self link of the workers' subnet: Dataflow's --subnetwork option (with --no_use_public_ips)."
  value       = google_compute_subnetwork.this.self_link
}

output "subnetwork_name" {
  description = "Name of the workers' subnet."
  value       = google_compute_subnetwork.this.name
}
