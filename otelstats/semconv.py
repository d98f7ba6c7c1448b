"""The GenAI semantic-convention names otelstats emits and reads, and the spec's bucket boundaries.

Emitted names are the current ones; `LEGACY_*` aliases are only read (spans from older tools).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Final

# Span attributes (current GenAI semantic conventions).
PROVIDER_NAME: Final = "gen_ai.provider.name"
OPERATION_NAME: Final = "gen_ai.operation.name"
REQUEST_MODEL: Final = "gen_ai.request.model"
RESPONSE_MODEL: Final = "gen_ai.response.model"
RESPONSE_ID: Final = "gen_ai.response.id"
INPUT_MESSAGES: Final = "gen_ai.input.messages"
OUTPUT_MESSAGES: Final = "gen_ai.output.messages"
RESPONSE_FINISH_REASONS: Final = "gen_ai.response.finish_reasons"
REQUEST_STREAM: Final = "gen_ai.request.stream"
REQUEST_CHOICE_COUNT: Final = "gen_ai.request.choice.count"
RESPONSE_TIME_TO_FIRST_CHUNK: Final = "gen_ai.response.time_to_first_chunk"
USAGE_INPUT_TOKENS: Final = "gen_ai.usage.input_tokens"
USAGE_OUTPUT_TOKENS: Final = "gen_ai.usage.output_tokens"
USAGE_CACHE_READ_INPUT_TOKENS: Final = "gen_ai.usage.cache_read.input_tokens"
USAGE_REASONING_OUTPUT_TOKENS: Final = "gen_ai.usage.reasoning.output_tokens"
CONVERSATION_ID: Final = "gen_ai.conversation.id"
TOKEN_TYPE: Final = "gen_ai.token.type"  # noqa: S105 (a name, not a secret)
ERROR_TYPE: Final = "error.type"
SERVER_ADDRESS: Final = "server.address"
SERVER_PORT: Final = "server.port"

# Legacy names still written by older instrumentations; read, never emitted.
LEGACY_SYSTEM: Final = "gen_ai.system"
LEGACY_USAGE_PROMPT_TOKENS: Final = "gen_ai.usage.prompt_tokens"
LEGACY_USAGE_COMPLETION_TOKENS: Final = "gen_ai.usage.completion_tokens"
LEGACY_OPENAI_RESPONSE_MODEL: Final = "gen_ai.openai.response.model"

# otelstats' own attributes, for what the conventions have no name for.
OTELSTATS_OUTCOME: Final = "otelstats.outcome"
"""ok | error | cancelled (stopped by the user) | incomplete (cut short by the server). Absent
means ok, or error when the span has `error.type` or an error status (otelstats' own spans leave
it out on ok calls: every attribute costs the caller about a microsecond)."""
OTELSTATS_TOKENS_SOURCE: Final = "otelstats.usage.source"
"""reported (server usage) | counted (output chunks counted) | none (nothing known). Absent
means reported when the span has token counts, none when it has not."""
OTELSTATS_DUPLICATE_OF: Final = "otelstats.duplicate_of"
"""On another instrumentation's span of a call otelstats also traced: never a second record."""
OTELSTATS_SCOPE: Final = "otelstats.instrumentation.openai"
"""The instrumentation scope of otelstats' call spans (see `every_call`)."""

# Values.
OPERATION_CHAT: Final = "chat"
OPERATION_TEXT_COMPLETION: Final = "text_completion"
OPERATION_EMBEDDINGS: Final = "embeddings"
OPERATION_GENERATE_CONTENT: Final = "generate_content"
PROVIDER_OPENAI: Final = "openai"
PROVIDER_AZURE_OPENAI: Final = "azure.ai.openai"
TOKEN_TYPE_INPUT: Final = "input"  # noqa: S105
TOKEN_TYPE_OUTPUT: Final = "output"  # noqa: S105

# Metrics.
METRIC_TOKEN_USAGE: Final = "gen_ai.client.token.usage"  # noqa: S105
METRIC_OPERATION_DURATION: Final = "gen_ai.client.operation.duration"
METRIC_TIME_TO_FIRST_CHUNK: Final = "gen_ai.client.operation.time_to_first_chunk"
METRIC_TIME_PER_OUTPUT_CHUNK: Final = "gen_ai.client.operation.time_per_output_chunk"

# Explicit bucket boundaries the GenAI metric conventions advise.
TOKEN_USAGE_BUCKETS: Final[tuple[float, ...]] = (
    1, 4, 16, 64, 256, 1024, 4096, 16384, 65536, 262144, 1048576, 4194304, 16777216, 67108864,
)  # fmt: skip
DURATION_BUCKETS: Final[tuple[float, ...]] = (
    0.01, 0.02, 0.04, 0.08, 0.16, 0.32, 0.64, 1.28, 2.56, 5.12, 10.24, 20.48, 40.96, 81.92,
)  # fmt: skip
TIME_TO_FIRST_CHUNK_BUCKETS: Final = DURATION_BUCKETS
TIME_PER_OUTPUT_CHUNK_BUCKETS: Final[tuple[float, ...]] = (
    0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5, 0.75, 1.0, 2.5,
)  # fmt: skip

GENAI_MARKERS: Final = (OPERATION_NAME, PROVIDER_NAME, LEGACY_SYSTEM)
"""A span carrying any of these is a GenAI span; everything else is ignored."""

# Wire names of OpenAI-compatible servers (read from streams, never emitted).
DELTA_REASONING: Final = ("reasoning_content", "reasoning")
"""Reasoning text a chat stream's delta carries before the answer, outside the SDK's fields:
`reasoning_content` (llama.cpp, vLLM, DeepSeek), `reasoning` (Ollama, newer vLLM, OpenRouter)."""
DELTA_OUTPUT: Final = (
    "content", "tool_calls", "refusal", "function_call", "audio", *DELTA_REASONING,
)  # fmt: skip
"""Every field of a chat stream's delta that carries generated output: a chunk with any of them is
an output chunk (time to first chunk, tokens counted when a server reports no usage)."""
RESPONSE_TERMINAL_EVENTS: Final = frozenset(
    {"response.completed", "response.incomplete", "response.failed"}
)
"""The Responses API's stream events that end a response, each carrying the whole response."""


_AZURE_DOMAINS: Final = (".azure.com", ".azure.us", ".azure.cn", ".azure-api.net")


def provider_name(host: str | None, path: str = "") -> str:
    """`gen_ai.provider.name` of a server spoken to over the OpenAI API, by its address: Azure
    OpenAI on its own hosts (`x.openai.azure.com`, `x.cognitiveservices.azure.com`, sovereign
    clouds alike) and under its `/openai` paths on other Azure hosts (AI Foundry, API
    Management); anything else is `openai`, the API spoken (a local server's too)."""
    if host and host.endswith(_AZURE_DOMAINS) and ("openai" in host or "/openai" in path):
        return PROVIDER_AZURE_OPENAI
    return PROVIDER_OPENAI


NOT_AN_ANSWER: Final = "APIResponseValidationError"
"""`error.type` of a 200 answer whose body is not the API's JSON object (a web UI's page, an empty
body, a JSON list): the name the openai SDK gives this failure in its strict mode; by default it
hands the body back as it came (text, a list, None) and raises nothing."""


def answered_error(error: object) -> str | None:
    """`error.type` of a failure a server reports inside a successful (200) answer's body, as
    OpenRouter does for an error met while the model was producing the output: the body's
    `error` member (a JSON object, or a message). Its `code` names it (OpenRouter's are numbers:
    `502`), else its `type`; None when the body reports no error (`"error": null` or `{}`)."""
    if isinstance(error, str):
        return "error" if error else None
    if not isinstance(error, Mapping) or not error:
        return None
    for key in ("code", "type"):
        value = error.get(key)
        if isinstance(value, (str, int)) and not isinstance(value, bool) and value != "":
            return str(value)[:64]
    return "error"


def with_hidden_output(
    input_tokens: int, output_tokens: int, reasoning_tokens: int | None, total: object
) -> tuple[int, int | None]:
    """(output, reasoning) tokens with the reasoning inside the output: what the GenAI
    conventions (and OpenAI's usage) mean by output tokens. Some servers leave it out of their
    output count, and only their total says so:
    - xAI reports it beside the output (docs.x.ai: "counted separately from completion_tokens,
      but ... counted in the total_tokens"): total = input + output + reasoning;
    - Gemini's OpenAI-compatible endpoint reports no reasoning count at all, and its total holds
      the model's thoughts: total = input + output + thoughts.
    Any other usage (OpenAI's: total = input + output) is taken as it came."""
    if type(total) is not int:
        return output_tokens, reasoning_tokens
    hidden = total - input_tokens - output_tokens
    if hidden <= 0 or (reasoning_tokens is not None and reasoning_tokens != hidden):
        return output_tokens, reasoning_tokens
    return output_tokens + hidden, hidden


CACHED_ELSEWHERE: Final = ("cached_tokens", "prompt_cache_hit_tokens")
"""Where servers name the prompt's cached tokens in the usage itself, instead of OpenAI's
`prompt_tokens_details.cached_tokens`: Moonshot's `cached_tokens`, DeepSeek's
`prompt_cache_hit_tokens` (both a part of the prompt tokens)."""


def cached_elsewhere(usage: Mapping[str, object]) -> object:
    """The cached prompt tokens a usage's JSON names beside its counts (`CACHED_ELSEWHERE`)."""
    for name in CACHED_ELSEWHERE:
        if name in usage:
            return usage[name]
    return None
