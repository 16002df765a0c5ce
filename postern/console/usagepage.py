"""The console's "Usage & limits" page (docs/console.md): a month's usage per customer
(and, for an org admin, per enrollment key), the rate limits in force, the billing
backend (with the metered plan's statement), and the kill switch for sending
(docs/limits.md, "Stopping sending").

Every figure comes from the core functions ``/v1/usage`` and ``/v1/admin/sending-stops``
call, as the session's admin principal: an org admin sees and stops only its own
customer's, an operator every tenant's; another tenant's stop is the same 404 as a
missing one.
"""

from __future__ import annotations

import datetime as dt
import re
from dataclasses import asdict

import falcon

from postern.console.forms import read_form
from postern.console.web import page
from postern.core import enrollment, sendingstops, usage
from postern.core.errors import InvalidInput
from postern.core.models import Customer, EnrollmentKey, utcnow
from postern.core.ratelimits.policy import policies
from postern.core.views import sending_stop_json

_MONTH = re.compile(r"^(\d{4})-(\d{2})$")
#: Enrollment keys broken out for an org admin (two aggregate queries each).
MAX_KEY_ROWS = 50


def human_bytes(n: int) -> str:
    """``n`` bytes as people read it: 512 B, 1.5 KiB, 20.0 MiB."""
    size = float(n)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if size < 1024 or unit == "TiB":
            return f"{int(size)} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{n} B"  # unreachable


def month_bounds(raw: str | None, now: dt.datetime | None = None) -> tuple[dt.datetime, dt.datetime]:
    """[start, end) of the month ``raw`` names (``YYYY-MM``; none: this month, UTC)."""
    now = now or utcnow()
    if raw:
        found = _MONTH.match(raw.strip())
        if found is None or not 1 <= int(found.group(2)) <= 12 or int(found.group(1)) < 1970:
            raise InvalidInput("month is written YYYY-MM, e.g. 2026-05", field="month")
        start = dt.datetime(int(found.group(1)), int(found.group(2)), 1)
    else:
        start = dt.datetime(now.year, now.month, 1)
    end = (start + dt.timedelta(days=32)).replace(day=1)
    return start, end


def _iso(moment: dt.datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


def _row(found: usage.Usage, label: str, name: str) -> dict:
    row = asdict(found)
    row["label"], row["name"] = label, name
    row["api_calls_total"] = sum(found.api_calls.values())
    for field in ("bytes_sent", "bytes_received", "bytes_stored"):
        row[f"{field}_human"] = human_bytes(getattr(found, field))
    return row


def _billing(postern) -> object | None:
    try:
        return postern.backend("billing")
    except Exception:  # noqa: BLE001 - an unusable backend is shown as such, not a failed page
        return None


class UsageResource:
    def __init__(self, web):
        self.web = web

    @page
    async def on_get(self, req, resp):
        start, end = month_bounds(req.get_param("month"))
        postern = self.web.postern
        billing = _billing(postern)

        def read(principal, info):
            since, until = _iso(start), _iso(end)
            if principal.is_operator:
                found = usage.read_every_customer(principal, info, since, until)
            else:
                found = [usage.read_usage(principal, info, None, since, until)]
            ids = [u.customer_id for u in found]
            names = {c.id: (c.label, c.name) for c in Customer.select().where(Customer.id.in_(ids))}
            rows = [_row(u, *names.get(u.customer_id, ("", ""))) for u in found]
            keys = []
            if not principal.is_operator:
                visible = enrollment.visible_enrollment_keys(principal)
                for key in visible.order_by(EnrollmentKey.created_at, EnrollmentKey.id).limit(MAX_KEY_ROWS):
                    one = usage.summary(key.customer_id, enrollment_id=key.id, since=start, until=end)
                    keys.append({**_row(one, "", ""), "key_prefix": key.key_prefix, "description": key.description})
            statements = []
            if billing is not None and callable(getattr(billing, "statement", None)):
                for row in rows:
                    lines = billing.statement(row["customer_id"])
                    statements.append({"label": row["label"], "customer_id": row["customer_id"], "lines": lines})
            stops = [sending_stop_json(s) for s in sendingstops.list_stops(principal)]
            return rows, keys, statements, stops

        session, principal, (rows, keys, statements, stops) = await self.web.act(req, read)
        limits = postern.config.limits
        previous = (start - dt.timedelta(days=1)).strftime("%Y-%m")
        following = end.strftime("%Y-%m") if end <= utcnow() else None
        self.web.render(
            resp,
            "usage.html",
            session=session,
            principal=principal,
            month=start.strftime("%Y-%m"),
            previous_month=previous,
            next_month=following,
            rows=rows,
            keys=keys,
            limits_enabled=limits.enabled,
            policies=sorted(policies(limits).values(), key=lambda p: p.name),
            recipients_per_message=limits.recipients_per_message,
            billing_name=getattr(billing, "name", None) or "unavailable",
            statements=statements,
            stops=stops,
            kinds=sendingstops.KINDS,
        )


class StopSendingResource:
    """The same stop as ``POST /v1/admin/sending-stops``, audited by the core."""

    def __init__(self, web):
        self.web = web

    @page
    async def on_post(self, req, resp):
        form = await read_form(req)

        def stop(principal, info):
            kind = form.get("kind", "").strip()
            subject = form.get("id", "").strip()
            return sendingstops.stop_sending(principal, info, kind, subject, form.get("reason", "").strip())

        _, _, made = await self.web.act(req, stop, csrf=form.get("csrf"), state_changing=True)
        if form.get("back") == "agent" and made.kind == "agent":  # the agent page's button
            raise falcon.HTTPSeeOther(f"/console/agents/{made.subject_id}")
        raise falcon.HTTPSeeOther("/console/usage")


class ResumeSendingResource:
    """The same lift as ``DELETE /v1/admin/sending-stops/{id}``; another tenant's stop is
    a 404, as a missing one."""

    def __init__(self, web):
        self.web = web

    @page
    async def on_post(self, req, resp, stop_id):
        form = await read_form(req)

        def resume(principal, info):
            sendingstops.resume_sending(principal, info, stop_id)

        await self.web.act(req, resume, csrf=form.get("csrf"), state_changing=True)
        raise falcon.HTTPSeeOther("/console/usage")


def usage_routes(web) -> list[tuple[str, object]]:
    return [
        ("/console/usage", UsageResource(web)),
        ("/console/usage/stops", StopSendingResource(web)),
        ("/console/usage/stops/{stop_id}/resume", ResumeSendingResource(web)),
    ]
