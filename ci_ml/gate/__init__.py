"""The promotion gate: one pure decision from model metrics, data checks and findings."""
