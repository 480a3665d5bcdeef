"""Data: loading CSVs into arrays, and the data checks (schema, quality, leakage, drift)."""
