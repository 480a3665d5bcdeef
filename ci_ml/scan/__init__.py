"""Scanners: one adapter per tool behind one interface, all producing the same ``Finding``."""
