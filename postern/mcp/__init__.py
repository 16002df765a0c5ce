"""Postern's MCP server (``postern mcp``): its tools are clients of the REST API,
built on the Python SDK, so they behave the same against any Postern host.

Needs the ``mcp`` extra. See docs/mcp.md.
"""
