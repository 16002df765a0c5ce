"""An HTML-only verification mail over MCP, through the real MCP client (mock mode): the
code and link come with the wait result, and the body reads without include_html."""

from __future__ import annotations

import asyncio

import jsonschema
from test_mcp import ok, stdio

HTML = (
    "<html><body><div style='display:none'>preheader 999999</div>"
    "<p>Ihr Bestätigungscode lautet <b>583 920</b>.</p>"
    "<p><a href='https://konto.example.de/bestaetigen?k=Hq7'>E-Mail-Adresse bestätigen</a></p></body></html>"
)


def test_wait_and_get_message_carry_the_code_and_the_text_of_html_only_mail():
    async def run():
        async with stdio({"POSTERN_MOCK": "1"}) as client:
            tools = {t.name: t for t in (await client.list_tools()).tools}
            inbox = await ok(client, "create_inbox", username="signup")
            cursor = (await ok(client, "wait_for_email", inbox_id=inbox["id"], timeout=0))["cursor"]
            await ok(
                client,
                "mock_deliver_email",
                to=[inbox["address"]],
                subject="Willkommen",
                html=HTML,
                sender="noreply@konto.example.de",
            )
            args = {"inbox_id": inbox["id"], "timeout": 10, "cursor": cursor}
            result = await client.call_tool("wait_for_email", args)
            jsonschema.validate(result.structured_content, tools["wait_for_email"].output_schema)
            [message] = result.structured_content["messages"]
            assert message["codes"] == [{"code": "583920", "evidence": "bestätigungscode"}]
            assert message["links"] == [
                {"url": "https://konto.example.de/bestaetigen?k=Hq7", "kind": "verify", "sender_domain": True}
            ]
            assert "583 920" in message["snippet"] and "999999" not in message["snippet"]
            detail = await ok(client, "get_message", inbox_id=inbox["id"], message_id=message["id"])
            assert "Bestätigungscode lautet 583 920" in detail["text"] and "html" not in detail
            assert detail["codes"] == message["codes"]

    asyncio.run(run())
