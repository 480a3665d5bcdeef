"""The offline advisory mirror: OSV records from a directory, matched and served like osv.dev."""
