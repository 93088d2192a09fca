"""Probes: one module per check kind, each turning config into Checks that produce Results."""
