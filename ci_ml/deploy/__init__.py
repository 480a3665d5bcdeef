"""Deployment: the model server's container image (and, elsewhere, its Kubernetes manifests)."""
