"""Ways calls reach otelstats from outside the instrumented process.

`otlp` receives OTLP/HTTP traces (`POST /v1/traces`) for `otelstats serve`; `proxy` is the
OpenAI-compatible recording proxy; `commands` holds their click commands. Every call they see
becomes an OTel span first and is mapped by `records.span_to_record`, like any other source.
"""
