"""The per-DC Elasticsearch re-index through RWS: spec, windows, planning, checkpoints, sending."""
