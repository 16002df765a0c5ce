"""SMTP ingest with and without code extraction, in the same run, on the same database.

Postern's real listener (``python -m postern service run smtp``, SQLite) loaded by
Debian's ``smtp-source`` exactly as bench/smtp_ingest.py does (10 sessions, a new
connection per message), but each message is one of the corpus's verification mails
(``smtp-source -F``), so extraction has real work to do:

- ``html``: tests/corpus/codes/02-en-slack-dash.eml, HTML only: the text is derived
  from the HTML (lxml + inscriptis) in both configurations, and extraction runs on it.
- ``multipart``: 11-en-code-and-link.eml, text and HTML parts: a code and a link.

For each message kind, rounds interleave ``[mail] extract_codes = false`` (the
baseline: Postern as it stored mail before extraction, HTML-only mail still made
readable) and the default (``true``). The table shows the median msg/s and the ratio
with extraction to without; the target is a ratio >= 90%.

    python bench/extraction_ingest.py [--messages 1000] [--rounds 3]
"""

from __future__ import annotations

import shutil
import statistics
import sys
import tempfile
from pathlib import Path

from harness import Child, count_messages, make_world, postern_cmd, record, running, wait_smtp
from smtp_ingest import check_tools, interleaved_arguments, smtp_source

CORPUS = Path(__file__).resolve().parent.parent / "tests" / "corpus" / "codes"
KINDS = {"html": "02-en-slack-dash.eml", "multipart": "11-en-code-and-link.eml"}
TARGET = 0.90


def message_file(tmp: Path, kind: str) -> Path:
    """The corpus mail as smtp-source -F wants it: header and body, LF line ends."""
    raw = (CORPUS / KINDS[kind]).read_bytes().replace(b"\r\n", b"\n")
    path = tmp / f"{kind}.eml"
    path.write_bytes(raw)
    return path


def main() -> int:
    parser = interleaved_arguments(__doc__)
    args = parser.parse_args()
    check_tools()
    args.reuse, args.size = False, 0  # what smtp_ingest.smtp_source reads (no -l: -F gives the message)

    samples: dict[tuple[str, bool], list[float]] = {}
    sent = extracted_expected = 0
    tmp = Path(tempfile.mkdtemp(prefix="postern-bench-extract-"))
    try:
        world = make_world(tmp)
        inbox = world.inboxes[0]["address"]
        for round_no in range(1, args.rounds + 1):
            for kind in KINDS:
                source = message_file(tmp, kind)
                for extracting in (False, True):
                    world.write_config(f"[mail]\nextract_codes = {'true' if extracting else 'false'}\n")
                    name = f"{kind} {'extract' if extracting else 'baseline'}"
                    log = tmp / f"{name.replace(' ', '-')}-{round_no}.log"
                    child = Child(name, postern_cmd("service", "run", "smtp"), log, world.env(), tmp)
                    with running(child):
                        wait_smtp(child, world.smtp_port)
                        smtp_source_file(args, world.smtp_port, inbox, args.warmup, source)
                        elapsed = smtp_source_file(args, world.smtp_port, inbox, args.messages, source)
                        child.check_alive()
                    sent += args.warmup + args.messages
                    extracted_expected += (args.warmup + args.messages) if extracting else 0
                    rate = args.messages / elapsed
                    samples.setdefault((kind, extracting), []).append(rate)
                    print(f"  round {round_no}: {name:<18} {rate:>7,.0f} msg/s", file=sys.stderr)
        stored = count_messages(world)
        extracted = count_extracted(world)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)

    print(f"\n# {args.sessions} sessions, {args.messages} messages per run, {args.rounds} rounds, median msg/s")
    print(f"{'message':<10} {'baseline':>9} {'extract':>9} {'ratio':>7}")
    ok = stored == sent and extracted == extracted_expected
    for kind in KINDS:
        base = statistics.median(samples[(kind, False)])
        with_extraction = statistics.median(samples[(kind, True)])
        ratio = with_extraction / base
        ok = ok and ratio >= TARGET
        print(f"{kind:<10} {base:>9,.0f} {with_extraction:>9,.0f} {ratio:>7.0%}")
        record(
            f"SMTP ingest with extraction ({kind}), msg/s",
            with_extraction,
            "msg/s",
            "extract_codes = false",
            base,
            f">= {TARGET:.0%}",
            ratio >= TARGET,
        )
    print(f"target: extraction costs at most {1 - TARGET:.0%} of ingest throughput")
    print(f"stored rows: {stored:,} of {sent:,} sent -> {'OK' if stored == sent else 'MISMATCH'}")
    print(
        f"rows with codes or links: {extracted:,} of {extracted_expected:,} stored with extraction on -> "
        f"{'OK' if extracted == extracted_expected else 'MISMATCH'}"
    )
    return 0 if ok else 1


def count_extracted(world) -> int:
    import contextlib
    import sqlite3

    with contextlib.closing(sqlite3.connect(world.db_path)) as conn:
        return conn.execute("SELECT count(*) FROM message WHERE extraction != ''").fetchone()[0]


def smtp_source_file(args, port: int, to: str, messages: int, source: Path) -> float:
    return smtp_source(args, port, to, messages, extra=["-F", str(source)])


if __name__ == "__main__":
    sys.exit(main())
