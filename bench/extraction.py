"""Code and link extraction time per message, on tests/corpus/codes/.

For each corpus message, in one process: Postern's MIME parse (the baseline: work
every stored message already costs), the text derived from HTML when the message has
no text part (postern/core/mail/htmltext.py), and the extraction itself
(postern/core/mail/extract.py). Each is timed ``--repeat`` times per message; the
table shows p50/p99 over all of them and the ratio to the parse. Target: extraction
p99 under 5 ms. Also prints the corpus's precision and recall.

    python bench/extraction.py [--repeat 20]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from harness import percentile, record

from postern.core.mail.extract import extract
from postern.core.mail.htmltext import html_to_text
from postern.core.mail.mime import MailLimits, parse

CORPUS = Path(__file__).resolve().parent.parent / "tests" / "corpus" / "codes"
LIMITS = MailLimits(25 * 1024 * 1024, 10, 200)
TARGET_P99 = 0.005


def timed(fn, *args) -> tuple[float, object]:
    start = time.perf_counter()
    result = fn(*args)
    return time.perf_counter() - start, result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeat", type=int, default=20, help="timings per message and step [20]")
    args = parser.parse_args()
    expected = json.loads((CORPUS / "expected.json").read_text())
    steps: dict[str, list[float]] = {"parse (baseline)": [], "html to text": [], "extract": []}
    hits = extra = missed = 0
    for name, want in expected.items():
        raw = (CORPUS / name).read_bytes()
        for _ in range(args.repeat):
            seconds, parsed = timed(parse, raw, LIMITS)
            steps["parse (baseline)"].append(seconds)
            text = parsed.text
            if not text.strip():
                seconds, text = timed(html_to_text, parsed.html)
                steps["html to text"].append(seconds)
            seconds, found = timed(extract, parsed.subject, text, parsed.html, parsed.sender.address)
            steps["extract"].append(seconds)
        got = {c.value for c in found.codes} | {x.url for x in found.links}
        wanted = set(want["codes"]) | set(want["links"])
        hits, extra, missed = hits + len(got & wanted), extra + len(got - wanted), missed + len(wanted - got)

    base = percentile(steps["parse (baseline)"], 50)
    print(f"# {len(expected)} corpus messages x {args.repeat}; times in ms")
    print(f"{'step':<18} {'n':>6} {'p50':>7} {'p99':>7} {'p50 vs parse':>13}")
    for step, values in steps.items():
        p50, p99 = percentile(values, 50), percentile(values, 99)
        print(f"{step:<18} {len(values):>6} {p50 * 1000:>7.3f} {p99 * 1000:>7.3f} {p50 / base:>12.0%}")
    p99 = percentile(steps["extract"], 99)
    met = p99 < TARGET_P99
    print(f"target: extraction p99 < {TARGET_P99 * 1000:.0f} ms -> {p99 * 1000:.2f} ms, {'met' if met else 'NOT met'}")
    precision, recall = hits / max(hits + extra, 1), hits / max(hits + missed, 1)
    print(f"corpus: precision {precision:.1%} ({hits}/{hits + extra}), recall {recall:.1%} ({hits}/{hits + missed})")
    record("extraction p99 per message, ms", p99 * 1000, "ms", "parse p50", base * 1000, "< 5 ms", met)
    return 0 if met else 1


if __name__ == "__main__":
    sys.exit(main())
