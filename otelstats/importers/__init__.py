"""One-off imports of call history kept by other tools (`otelstats import ...`)."""
