"""The console: the human side of Postern, served by the API under /console
(docs/console.md). Server-rendered pages with htmx (vendored) for the live parts."""

from __future__ import annotations

from postern.console import approvalspage, mailpages, manage, settings, signin, usagepage
from postern.console.static import StaticResource
from postern.console.web import Web


def routes(postern, runner, waiters) -> list[tuple[str, object]]:
    if not postern.config.console.enabled:
        return []
    web = Web(postern, runner, waiters)
    inbox = "/console/inboxes/{inbox_id}"
    message = f"{inbox}/messages/{{message_id}}"
    return [
        ("/console", manage.OverviewResource(web)),
        ("/console/login", signin.LoginResource(web)),
        ("/console/link", signin.LinkResource(web)),
        ("/console/logout", signin.LogoutResource(web)),
        ("/console/customers", manage.CustomersResource(web)),
        ("/console/customers/{customer_id}/suspend", manage.CustomerSuspensionResource(web, True)),
        ("/console/customers/{customer_id}/resume", manage.CustomerSuspensionResource(web, False)),
        ("/console/customers/{customer_id}/delete", manage.CustomerDeleteResource(web)),
        ("/console/keys", manage.EnrollmentKeysResource(web)),
        ("/console/keys/{key_id}/revoke", manage.EnrollmentKeyRevokeResource(web)),
        ("/console/agents", manage.AgentsResource(web)),
        ("/console/agents/{agent_id}", manage.AgentResource(web)),
        ("/console/agent-keys/{key_id}/revoke", manage.AgentKeyRevokeResource(web)),
        ("/console/audit", manage.AuditResource(web)),
        ("/console/inboxes", mailpages.InboxesResource(web)),
        (inbox, mailpages.InboxResource(web)),
        (f"{inbox}/live", mailpages.LiveResource(web)),
        (f"{inbox}/delete", mailpages.InboxDeleteResource(web)),
        (message, mailpages.MessageResource(web)),
        (f"{message}/frame", mailpages.MessageFrameResource(web)),
        (f"{message}/download", mailpages.DownloadResource(web)),
        *settings.settings_routes(web),
        *usagepage.usage_routes(web),
        *approvalspage.approval_routes(web),
        ("/console/static/{name}", StaticResource()),
    ]
