"""Every aggregate otelstats shows (placeholder until the query layer lands)."""
