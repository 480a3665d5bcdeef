"""Monitoring of the served model: drift, late labels, SLOs, the retraining trigger."""
