"""``mcp_http``: runs the MCP server over streamable HTTP beside the API when
``[mcp] enabled = true``. It is a client of this server's REST API like any agent."""

from postern.core.hookspecs import hookimpl
from postern.core.services import Service

MISSING_EXTRA = "the MCP server needs the 'mcp' extra: pip install 'postern[mcp]'"


def run_mcp(postern) -> None:
    from postern.core.config import api_base_url, split_host_port

    try:
        from postern.mcp.run import run_http
    except ImportError as exc:
        raise SystemExit(f"{MISSING_EXTRA} ({exc})") from None
    host, port = split_host_port("mcp.bind", postern.config.mcp.bind)
    run_http(
        host=host,
        port=port,
        base_url=api_base_url(postern.config),
        trusted_proxies=postern.config.server.trusted_proxies,
    )


@hookimpl
def postern_services(postern):
    if not postern.config.mcp.enabled:
        return []
    return [Service("mcp", run_mcp, f"MCP server (streamable HTTP) on {postern.config.mcp.bind}")]
