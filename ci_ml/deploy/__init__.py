"""Deployment: the model server's container image and its Kubernetes manifests (stable + canary)."""
