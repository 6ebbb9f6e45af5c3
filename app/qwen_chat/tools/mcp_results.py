"""What the MCP hub hands to the rest of the app: tools, server states, call results, and the checks on them.

Plain values with no SDK objects in them, so that the session and the TUI never import the SDK and a value can
be passed between threads freely.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

import mcp_types

STATUSES = ("connecting", "up", "down", "disabled")


@dataclass(frozen=True)
class ToolSpec:
    """One tool of one server, as the server described it."""

    server: str
    name: str
    description: str
    input_schema: dict[str, Any] = field(hash=False)  # compared, but not hashed (a dict cannot be)

    @property
    def qualified_name(self) -> str:
        """`server__name`: the name `McpHub.find` always resolves, even when two servers offer the same tool."""
        return f"{self.server}__{self.name}"

    def function(self, name: str | None = None) -> dict[str, Any]:
        """The OpenAI / Qwen function spec the model is shown (under `name` when given, e.g. the qualified one)."""
        return {"type": "function", "function": {"name": name or self.name, "description": self.description,
                                                 "parameters": self.input_schema}}


@dataclass(frozen=True)
class ServerState:
    name: str
    status: str  # one of STATUSES
    error: str | None = None  # why it is down, in one line
    tools: tuple[ToolSpec, ...] = ()


@dataclass(frozen=True)
class ToolResult:
    """What a call gave, as text for the model. `is_error`: the tool failed or could not be called (the text
    says why); `truncated`: the text was cut to the hub's limit."""

    text: str
    is_error: bool
    truncated: bool = False


def error_result(message: str) -> ToolResult:
    return ToolResult(message, is_error=True)


def tool_spec(server: str, tool: mcp_types.Tool) -> ToolSpec:
    schema = tool.input_schema if isinstance(tool.input_schema, dict) else {"type": "object"}
    return ToolSpec(server, tool.name, tool.description or "", schema)


def validate_arguments(spec: ToolSpec, arguments: object) -> str | None:
    """None when `arguments` fit the tool's input schema, else one line the model can act on.

    A schema that is itself broken is not the model's fault and cannot be fixed by it: the call goes ahead and
    the server judges the arguments."""
    import jsonschema  # here: only a session that calls tools pays for loading it

    if not isinstance(arguments, dict):
        return f"{spec.name}: the arguments must be a JSON object, not {type(arguments).__name__}"
    try:
        validator_class = jsonschema.validators.validator_for(spec.input_schema)
        validator_class.check_schema(spec.input_schema)
        problem = jsonschema.exceptions.best_match(validator_class(spec.input_schema).iter_errors(arguments))
    except Exception:  # a broken schema, or a $ref that cannot be resolved offline: see above
        return None
    if problem is None:
        return None
    where = "/".join(str(part) for part in problem.absolute_path)
    return f"invalid arguments for {spec.name}: " + (f"{where}: " if where else "") + _one_line(problem.message)


def call_result(result: mcp_types.CallToolResult, limit: int) -> ToolResult:
    """The result as text: text blocks joined with newlines, other blocks described in a line each, the
    structured content as JSON when there is no text; cut to `limit` characters."""
    parts = [_block_text(block) for block in result.content]
    if not any(isinstance(block, mcp_types.TextContent) for block in result.content) and \
            result.structured_content is not None:
        parts.append(json.dumps(result.structured_content, ensure_ascii=False))
    text = "\n".join(parts)
    if not text and result.is_error:
        text = "the tool failed and gave no message"
    return truncated(ToolResult(text, is_error=bool(result.is_error)), limit)


def truncated(result: ToolResult, limit: int) -> ToolResult:
    if len(result.text) <= limit:
        return result
    note = f"\n[... cut: {limit:,} of {len(result.text):,} characters shown]"
    return ToolResult(result.text[:limit] + note, result.is_error, truncated=True)


def _block_text(block: object) -> str:
    if isinstance(block, mcp_types.TextContent):
        return block.text
    if isinstance(block, (mcp_types.ImageContent, mcp_types.AudioContent)):
        return f"[{block.mime_type}, {_decoded_size(block.data):,} bytes]"
    if isinstance(block, mcp_types.EmbeddedResource):
        resource = block.resource
        if isinstance(resource, mcp_types.TextResourceContents):
            return resource.text
        mime = f"{resource.mime_type}, " if resource.mime_type else ""
        return f"[resource {resource.uri}: {mime}{_decoded_size(resource.blob):,} bytes]"
    if isinstance(block, mcp_types.ResourceLink):
        return f"[link to {block.uri}" + (f" ({block.name})" if block.name else "") + "]"
    return f"[{getattr(block, 'type', type(block).__name__)} content]"


def _decoded_size(data: str) -> int:
    """Bytes the base64 text stands for (what a person wants to know), counted without decoding it."""
    digits = len(data) - sum(data.count(space) for space in " \n\r\t")
    return digits * 3 // 4 - len(data.rstrip()) + len(data.rstrip().rstrip("="))


def _one_line(text: str) -> str:
    return " ".join(text.split())
