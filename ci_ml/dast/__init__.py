"""Dynamic scanning of a running model endpoint: ZAP (through zapv2) or the built-in engine."""
