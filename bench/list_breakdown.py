"""Where one ``GET /v1/inboxes/{id}/messages`` spends its CPU, part by part, in one thread.

Builds the bench world (SQLite, one agent, ``--messages`` ~2 KB messages through the
core's ingest), then times each step of a list request as the API runs it on a database
thread, ``--repeat`` times each, with no HTTP in the way: authentication, the inbox
check, the page query into model instances (and the same query's bare fetch), the
attachments query, the audit row (deferred, as a read's is), the JSON of 50 summaries
and its encoding; beside them the one primary-key read falcon ``/db`` does
(list_throughput.py's baseline). The sum against the baseline says how far the list is
from it before any HTTP cost, and which part to work on.

    python bench/list_breakdown.py [--messages 50] [--repeat 500]
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from pathlib import Path

from harness import ROOT, make_world, prefill, record

sys.path.insert(0, str(ROOT / "tests"))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--messages", type=int, default=50)
    parser.add_argument("--repeat", type=int, default=500)
    args = parser.parse_args()

    import orjson
    from support.world import INFO

    from postern.core import audit, fastsql
    from postern.core.auth import authenticate
    from postern.core.config import load_config
    from postern.core.db import database
    from postern.core.inboxes import get_inbox
    from postern.core.mail import reading
    from postern.core.models import Message
    from postern.core.runtime import build_postern
    from postern.core.views import message_json, page_json

    tmp = Path(tempfile.mkdtemp(prefix="postern-bench-list-"))
    try:
        world = make_world(tmp)
        inbox = world.inboxes[0]["id"]
        prefill(world, world.inboxes[0], args.messages)
        build_postern(load_config(world.config_file, environ={}))
        database.connect(reuse_if_open=True)
        rows: list[tuple[str, float]] = []

        def timed(label, fn):
            start = time.perf_counter()
            for _ in range(args.repeat):
                result = fn()
            rows.append((label, (time.perf_counter() - start) / args.repeat * 1e6))
            return result

        principal = timed("authenticate the agent key", lambda: authenticate(world.key, "agent", INFO))
        timed("inbox check (get_inbox)", lambda: get_inbox(principal, INFO, inbox, audit_read=False))
        tail, params = "WHERE inbox_id = ? ORDER BY seq DESC LIMIT ?", [inbox, 51]
        fields = reading._SUMMARY_FIELDS
        columns = ", ".join(f'"{f.column_name}"' for f in fields)
        timed(
            "page query: bare fetch of 51 rows",
            lambda: database.execute_sql(f"SELECT {columns} FROM message {tail}", params).fetchall(),
        )
        items = timed("page query into model instances", lambda: fastsql.select(Message, fields, tail, params))[:50]
        timed("attachment counts query", lambda: reading.with_attachment_counts(items))

        def audited():
            with audit.deferring_reads():
                audit.record_read("message.list", principal=principal, info=INFO, target=inbox)

        timed("audit row (deferred)", audited)

        def listed():
            with audit.deferring_reads():
                return reading.list_messages(principal, INFO, inbox, {}, None, None)

        page = timed("list_messages, all of the above but auth", listed)
        body = timed(f"JSON of {len(page.items)} summaries (message_json)", lambda: page_json(page, message_json))
        timed("orjson encoding", lambda: orjson.dumps(body))
        baseline = timed(
            "baseline: one primary-key read (falcon /db)",
            lambda: database.execute_sql("SELECT id FROM inbox WHERE id = ?", (inbox,)).fetchone(),
        )
        database.close()
    finally:
        shutil.rmtree(tmp, ignore_errors=True)

    print(f"{'part of a list request':<48} {'us':>8}")
    for label, us in rows:
        print(f"{label:<48} {us:>8.0f}")
    total = dict(rows)
    baseline = total["baseline: one primary-key read (falcon /db)"]
    work = total["authenticate the agent key"] + total["list_messages, all of the above but auth"]
    work += total[f"JSON of {len(page.items)} summaries (message_json)"] + total["orjson encoding"]
    print(f"{'a list request without HTTP':<48} {work:>8.0f}  ({work / baseline:.0f}x the /db read)")
    record("list request CPU without HTTP", work, "us", "one primary-key read", baseline)
    return 0


if __name__ == "__main__":
    sys.exit(main())
