"""Site-level work: soil-profile observations and data assimilation."""
