"""Deployment: Kubernetes manifests (stable + canary) rendered from templates and validated."""
