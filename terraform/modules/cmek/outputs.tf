output "service_agents" {
  description = "The service agents granted use of the key, by service."
  value       = local.agents
}
