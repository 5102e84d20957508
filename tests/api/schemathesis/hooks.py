"""Schemathesis hooks for the API fuzzing test (tests/api/openapi.rs): an import body
(`application/x-ndjson`, described as a string) is sent as the generated text."""

import schemathesis

schemathesis.serializer.alias("application/x-ndjson", "text/plain")
