"""Request models of the OpenAI-compatible API (what the gateway validates at the edge)."""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    StrictBool,
    model_validator,
)

#: A model name is printable: a control character would reach the usage records, the audit trail and the
#: logs (and PostgreSQL stores no NUL at all). Checked in Python for a clear message; the same pattern goes
#: into the OpenAPI document.
_PRINTABLE = r"^[^\x00-\x1f\x7f-\x9f]+$"


def _printable(value: str) -> str:
    if re.fullmatch(_PRINTABLE, value) is None:
        raise ValueError("must not contain control characters")
    return value


ModelName = Annotated[
    str,
    Field(min_length=1, max_length=200, json_schema_extra={"pattern": _PRINTABLE}),
    AfterValidator(_printable),
]


def _not_a_bool(value: Any) -> Any:
    if isinstance(value, bool):
        raise ValueError("must be a number, not true or false")
    return value


# JSON's numbers as JSON Schema reads them: 2.0 is an integer, true is not a number (pydantic's lax mode takes
# true for 1, its strict mode refuses 2.0). Placed after a field's bounds, so that they reach its JSON schema.
NotABool = BeforeValidator(_not_a_bool)


class TextPart(BaseModel):
    model_config = ConfigDict(extra="allow")

    type: str
    text: str | None = None


class ChatMessage(BaseModel):
    """One message. ``content`` is a string or a list of parts (only text parts count as text)."""

    model_config = ConfigDict(extra="allow")

    role: Literal["system", "developer", "user", "assistant", "tool", "function"]
    content: str | list[TextPart] | None = None
    name: str | None = None

    def text(self) -> str:
        if isinstance(self.content, str):
            return self.content
        if self.content is None:
            return ""
        return " ".join(part.text or "" for part in self.content if part.type == "text")


class StreamOptions(BaseModel):
    model_config = ConfigDict(extra="allow")

    include_usage: StrictBool = False


class ChatCompletionRequest(BaseModel):
    """``POST /v1/chat/completions``. Unknown fields are kept and passed to an upstream provider."""

    model_config = ConfigDict(
        extra="allow",
        # The rule of _stream_options_need_stream, for the OpenAPI document.
        json_schema_extra={
            "if": {"properties": {"stream_options": {"type": "object"}}, "required": ["stream_options"]},
            "then": {"properties": {"stream": {"const": True}}, "required": ["stream"]},
        },
    )

    model: Annotated[ModelName, Field(examples=["gpt-4o-mini"])]
    messages: list[ChatMessage] = Field(min_length=1)
    max_tokens: Annotated[int, Field(ge=1, le=1_000_000), NotABool] | None = None
    max_completion_tokens: Annotated[int, Field(ge=1, le=1_000_000), NotABool] | None = None
    temperature: Annotated[float, Field(ge=0, le=2), NotABool] | None = None
    top_p: Annotated[float, Field(ge=0, le=1), NotABool] | None = None
    n: Annotated[int, Field(ge=1, le=1), NotABool] = 1
    stream: StrictBool = False
    stream_options: StreamOptions | None = None
    stop: str | list[str] | None = None
    user: str | None = None

    @model_validator(mode="after")
    def _stream_options_need_stream(self) -> ChatCompletionRequest:
        if self.stream_options is not None and not self.stream:
            raise ValueError("stream_options is only allowed when stream is true")
        return self

    @property
    def output_limit(self) -> int | None:
        return self.max_completion_tokens or self.max_tokens

    @property
    def include_usage(self) -> bool:
        return self.stream_options is not None and self.stream_options.include_usage

    def prompt_text(self) -> list[str]:
        return [message.text() for message in self.messages]


class EmbeddingRequest(BaseModel):
    """``POST /v1/embeddings``: one string, a list of strings, or pre-tokenized input."""

    model_config = ConfigDict(extra="allow")

    model: Annotated[ModelName, Field(examples=["text-embedding-3-small"])]
    input: (
        Annotated[str, Field(max_length=1_000_000)]
        | Annotated[list[str], Field(min_length=1, max_length=2048)]
        | Annotated[list[Annotated[int, NotABool]], Field(min_length=1)]
        | Annotated[list[list[Annotated[int, NotABool]]], Field(min_length=1, max_length=2048)]
    )
    encoding_format: Literal["float", "base64"] = "float"
    dimensions: Annotated[int, Field(ge=1, le=4096), NotABool] | None = None
    user: str | None = None

    def texts(self) -> list[str] | None:
        """The input as strings, or None when the input is pre-tokenized."""
        if isinstance(self.input, str):
            return [self.input]
        if self.input and all(isinstance(item, str) for item in self.input):
            return [str(item) for item in self.input]
        return None

    def token_lists(self) -> list[list[int]]:
        items: list[Any] = [self.input] if isinstance(self.input, str) else list(self.input)
        if items and isinstance(items[0], int):
            return [[int(x) for x in items]]
        return [[int(x) for x in item] for item in items]


def dump_for_upstream(request: BaseModel, model: str, **overrides: Any) -> dict[str, Any]:
    body = request.model_dump(exclude_none=True)
    body["model"] = model
    body.update(overrides)
    return body
