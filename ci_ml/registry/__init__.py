"""The model registry: content-addressed versions, stages with history, attested promotions."""
