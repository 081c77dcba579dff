"""Clients and workloads for SuperServe: trace generators, an open-loop replayer, benchmark drivers."""
