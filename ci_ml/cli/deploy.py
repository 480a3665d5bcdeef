"""``ci-ml deploy``: the model server's container image and its Kubernetes manifests."""

from __future__ import annotations

import click


@click.group()
def deploy() -> None:
    """Build the model-server image or render Kubernetes manifests."""


COMMANDS = (deploy,)
