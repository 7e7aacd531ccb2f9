"""Structured captions in the backends: the grammar an in-process model decodes under, and the
`response_format` an OpenAI-compatible server is asked for (vidcap.schemas holds the schemas)."""

from __future__ import annotations

from ..engine import grammar as engine_grammar
from ..schemas import Schema, load_schema

# Keywords OpenAI's strict structured outputs accept; a schema using others is sent with strict off
# (vLLM and SGLang enforce every keyword either way; vidcap checks every answer against the schema).
OPENAI_STRICT = frozenset(
    {
        "$schema",
        "$ref",
        "$defs",
        "definitions",
        "title",
        "description",
        "type",
        "properties",
        "required",
        "additionalProperties",
        "items",
        "minItems",
        "maxItems",
        "enum",
        "const",
        "anyOf",
        "pattern",
        "format",
        "minimum",
        "maximum",
        "exclusiveMinimum",
        "exclusiveMaximum",
        "multipleOf",
    }
)


def schema_of(options) -> Schema | None:
    """The run's schema when it asks for JSON captions (--caption-format json), else None."""
    if getattr(options, "caption_format", "text") != "json":
        return None
    return load_schema(options.schema or "")


def response_format(schema: Schema) -> dict:
    """The chat-completions `response_format` asking for `schema` (OpenAI, vLLM, SGLang)."""
    return {
        "type": "json_schema",
        "json_schema": {"name": schema.name, "schema": schema.schema, "strict": strict_ok(schema.schema)},
    }


def strict_ok(schema) -> bool:
    """OpenAI's strict mode: every object closed with every property required, and known keywords only."""
    if isinstance(schema, list):
        return all(strict_ok(s) for s in schema)
    if not isinstance(schema, dict):
        return True
    if any(k not in OPENAI_STRICT for k in schema):
        return False
    props = schema.get("properties")
    if isinstance(props, dict) and (
        schema.get("additionalProperties") is not False or set(schema.get("required") or []) != set(props)
    ):
        return False
    subs = [*(props or {}).values(), *(schema.get("$defs") or {}).values(), schema.get("items"), schema.get("anyOf")]
    return all(strict_ok(s) for s in subs if s is not None)


_warned: set[str] = set()


def model_grammar(backend) -> engine_grammar.Grammar | None:
    """The grammar an in-process backend decodes under (built once per backend), None for text captions
    or where llguidance is not installed (then the captions are only checked, with a warning)."""
    opts = backend.options
    if getattr(opts, "caption_format", "text") != "json" or backend.model is None or not opts.constrain:
        return None
    cached = getattr(backend, "_grammar", None)  # asked at every engine() and generate() call: built once
    if cached is not None and cached[0] == opts.schema:
        return cached[1]
    schema = load_schema(opts.schema or "")
    if not engine_grammar.available():
        if "llguidance" not in _warned:
            _warned.add("llguidance")
            import sys

            print(
                "warning: decoding is not constrained to the schema (llguidance is not installed: "
                f"{engine_grammar.INSTALL_HINT}); captions are checked against it afterwards.",
                file=sys.stderr,
            )
        return None
    head = backend.model.get_output_embeddings()
    vocab = int(head.weight.shape[0])
    built = engine_grammar.Grammar(schema.schema, backend.tokenizer, vocab, list(backend.eos))
    backend._grammar = (opts.schema, built)
    return built


def generate_kwargs(backend, batch: int, n_prompt: int) -> dict:
    """Extra model.generate() arguments: the grammar's LogitsProcessor when decoding is constrained."""
    grammar = model_grammar(backend)
    if grammar is None:
        return {}
    return {"logits_processor": [engine_grammar.logits_processor(grammar, batch, n_prompt)]}
