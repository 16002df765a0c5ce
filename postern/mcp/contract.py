"""How Postern's tools present themselves to MCP hosts: behaviour hints per tool, and
argument errors that read like every other tool error (``code: message | fix: hint``).

The hints let a host decide what to confirm with its human: sends reach the outside
world and cannot be taken back, reads change nothing. ``Server`` refuses to register a
tool without hints, so a new tool has to choose them here.
"""

from __future__ import annotations

from typing import Any

from mcp.server.mcpserver import MCPServer
from mcp.server.mcpserver.exceptions import ToolError, UnexpectedToolError
from mcp_types import ToolAnnotations
from pydantic import ValidationError


def _hints(title: str, *, read_only: bool, destructive: bool = False, idempotent: bool, open_world: bool = False):
    return ToolAnnotations(
        title=title,
        read_only_hint=read_only,
        destructive_hint=destructive,
        idempotent_hint=idempotent,
        open_world_hint=open_world,
    )


#: Per tool. Nothing here deletes (destructive is false throughout). Reads are
#: read-only and idempotent, except wait_for_email, whose answer moves on with its
#: cursor, and get_attachment_link, which mints a new single-use link each call (and
#: changes no mail, so it stays read-only, like get_message, which mints them too).
#: Minting keys and inboxes and sending are not read-only, and each call makes a new
#: one. Only sends reach beyond this Postern (open world): mail leaves for any address.
ANNOTATIONS: dict[str, ToolAnnotations] = {
    "redeem_enrollment": _hints("Redeem an enrollment key", read_only=False, idempotent=False),
    "whoami": _hints("Who am I", read_only=True, idempotent=True),
    "create_inbox": _hints("Create an inbox", read_only=False, idempotent=False),
    "list_inboxes": _hints("List inboxes", read_only=True, idempotent=True),
    "list_messages": _hints("List messages", read_only=True, idempotent=True),
    "get_message": _hints("Read a message", read_only=True, idempotent=True),
    "send_email": _hints("Send an email", read_only=False, idempotent=False, open_world=True),
    "reply_to_email": _hints("Reply to an email", read_only=False, idempotent=False, open_world=True),
    "list_threads": _hints("List conversations", read_only=True, idempotent=True),
    "get_thread": _hints("Read a conversation", read_only=True, idempotent=True),
    "get_attachment_link": _hints("Get an attachment download link", read_only=True, idempotent=False),
    "list_mail_rules": _hints("List the allow and block lists", read_only=True, idempotent=True),
    "wait_for_email": _hints("Wait for new email", read_only=True, idempotent=False),
    # Planned in issue 19 (item 3); here so that tool registers when it lands.
    "wait_for_code": _hints("Wait for a verification code", read_only=True, idempotent=False),
    "mock_deliver_email": _hints("Deliver outside mail (mock mode)", read_only=False, idempotent=False),
}

INVALID_ARGUMENT = "invalid_argument"


class Server(MCPServer):
    """MCPServer with Postern's hints on every tool and plain argument errors."""

    def add_tool(self, fn, name: str | None = None, *args, annotations: ToolAnnotations | None = None, **kwargs):
        name = name or fn.__name__
        if annotations is None:
            if name not in ANNOTATIONS:
                raise LookupError(f"tool {name!r} has no behaviour hints: add it to postern.mcp.contract.ANNOTATIONS")
            annotations = ANNOTATIONS[name]
        super().add_tool(fn, name, *args, annotations=annotations, **kwargs)
        tool = self._tool_manager.get_tool(name)
        # Published, so hosts that check arguments before calling catch unknown ones too.
        tool.parameters["additionalProperties"] = False
        # The model reads every schema with each tools/list: keep them short.
        for schema in (tool.parameters, tool.fn_metadata.output_schema):
            _drop_titles(schema)

    async def call_tool(self, name: str, arguments: dict[str, Any], context=None):
        tool = self._tool_manager.get_tool(name)
        if tool is None:
            names = ", ".join(t.name for t in self._tool_manager.list_tools())
            raise ToolError(f"unknown_tool: there is no tool {name!r} | fix: call one of: {names}")
        unknown = sorted(set(arguments) - set(tool.parameters.get("properties", {})))
        if unknown:
            listed = ", ".join(repr(u) for u in unknown)
            raise ToolError(f"{INVALID_ARGUMENT}: {name} takes no argument {listed} | fix: {usage(tool)}")
        try:
            return await super().call_tool(name, arguments, context)
        except UnexpectedToolError:
            raise  # a crash: its text stays generic
        except ToolError as exc:
            if isinstance(exc.__cause__, ValidationError):
                raise ToolError(argument_error(tool, exc.__cause__)) from exc.__cause__
            # The SDK prefixes "Error executing tool <name>: "; the message is ours already.
            raise ToolError(str(exc).removeprefix(f"Error executing tool {name}: ")) from exc.__cause__


def _drop_titles(schema) -> None:
    """Drop pydantic's titles ("Inbox Id" for inbox_id): they only repeat the names.
    (``anyOf`` with ``null`` stays: some hosts refuse a list of types.)"""
    if isinstance(schema, dict):
        if isinstance(schema.get("title"), str):  # a property named "title" is a dict
            del schema["title"]
        for value in schema.values():
            _drop_titles(value)
    elif isinstance(schema, list):
        for value in schema:
            _drop_titles(value)


def argument_error(tool, exc: ValidationError) -> str:
    """``invalid_argument: <what is wrong, per argument> | fix: <the tool's arguments>``,
    without the values sent (they are the caller's data) or pydantic's links."""
    problems = []
    for error in exc.errors(include_url=False, include_input=False):
        where = ".".join(str(part) for part in error["loc"]) or "arguments"
        if error["type"] == "missing":
            problems.append(f"missing required argument {where!r}")
        else:
            message = error["msg"]
            problems.append(f"{where}: {message[:1].lower()}{message[1:]}")
    return f"{INVALID_ARGUMENT}: {'; '.join(problems)} | fix: {usage(tool)}"


def usage(tool) -> str:
    """The tool's arguments in one line, from its inputSchema: ``name(a: string, b?: integer 1-100)``."""
    schema = tool.parameters
    required = set(schema.get("required", ()))
    parts = []
    for arg, spec in schema.get("properties", {}).items():
        parts.append(f"{arg}{'' if arg in required else '?'}: {_type(spec)}")
    return f"call {tool.name}({', '.join(parts)})"


def _type(spec: dict) -> str:
    options = spec.get("anyOf") or [spec]
    names = []
    for option in options:
        kind = option.get("type")
        if kind == "null":
            continue
        if "enum" in option:
            names.append(" | ".join(repr(v) for v in option["enum"]))
        elif kind == "array":
            names.append(f"list of {_type(option.get('items', {}))}")
        elif kind == "integer" and ("minimum" in option or "maximum" in option):
            names.append(f"integer {option.get('minimum', '')}-{option.get('maximum', '')}")
        else:
            names.append(kind or "any")
    return " or ".join(names) or "any"
