"""The step graph, the content-hash step cache and the local runner."""
