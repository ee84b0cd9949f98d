"""Reusable Beam transforms and the record definitions they share."""
