"""Text from HTML mail: the candidate libraries compared on quality and time.

Every HTML part of tests/corpus/codes/ is turned into text by each candidate, and the
code extractor (postern/core/mail/extract.py) runs on that text alone, so quality is
measured as what matters here: the codes and links an agent gets (precision and
recall against expected.json), plus whether text a reader never sees leaks through
(a hidden preheader or a tracking pixel's address in the output). Time: p50/p99 per
HTML part, and the seconds for two hostile inputs (100,000 elements; 200,000 nested
divs) to show which candidates are bounded.

Candidates: ``inscriptis`` (alone), ``html-text`` (lxml based), ``html2text``
(markdown), and ``lxml pre-pass + inscriptis``, what Postern ships
(postern/core/mail/htmltext.py). Any candidate not installed is skipped.

    pip install inscriptis html-text html2text
    python bench/html_to_text.py [--repeat 10]
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import time
from pathlib import Path

from harness import percentile, record

from postern.core.mail.extract import extract
from postern.core.mail.htmltext import html_to_text
from postern.core.mail.mime import MailLimits, parse

CORPUS = Path(__file__).resolve().parent.parent / "tests" / "corpus" / "codes"
HOSTILE = {
    "100k elements": "<p>x</p>" * 100_000,
    "200k nested divs": "<div>" * 200_000 + "deep" + "</div>" * 200_000,
}
HIDDEN = re.compile(r"999999|/o/\d+\.gif")  # the corpus's hidden preheader code, tracking pixel URLs


def candidates() -> dict:
    found = {"lxml pre-pass + inscriptis (shipped)": html_to_text}
    try:
        import inscriptis
        from inscriptis.model.config import ParserConfig

        config = ParserConfig(display_links=True)
        found["inscriptis"] = lambda html: inscriptis.get_text(html, config)
    except ImportError:
        pass
    try:
        import html_text

        found["html-text"] = html_text.extract_text
    except ImportError:
        pass
    try:
        import html2text

        def convert(html: str) -> str:
            converter = html2text.HTML2Text()
            converter.body_width = 0
            return converter.handle(html)

        found["html2text"] = convert
    except ImportError:
        pass
    return found


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeat", type=int, default=10, help="timings per HTML part and candidate [10]")
    args = parser.parse_args()
    expected = json.loads((CORPUS / "expected.json").read_text())
    parts = []
    for name, want in expected.items():
        parsed = parse((CORPUS / name).read_bytes(), MailLimits(25 * 1024 * 1024, 10, 200))
        if parsed.html:
            parts.append((parsed, set(want["codes"]) | set(want["links"])))
    print(f"# {len(parts)} HTML parts from the corpus, {args.repeat} timings each; times in ms")
    print(f"{'candidate':<38} {'precision':>9} {'recall':>7} {'leaks':>6} {'p50':>7} {'p99':>7}", end="")
    print("".join(f" {name:>17}" for name in HOSTILE))
    rows = {}
    for label, convert in candidates().items():
        hits = extra = missed = leaks = 0
        times = []
        for parsed, wanted in parts:
            for _ in range(args.repeat):
                start = time.perf_counter()
                text = convert(parsed.html)
                times.append(time.perf_counter() - start)
            leaks += bool(HIDDEN.search(text))
            # Links come from the text alone here, so each candidate is judged on what it kept.
            found = extract(parsed.subject, text, "", parsed.sender.address)
            got = {c.value for c in found.codes} | {x.url for x in found.links}
            hits, extra, missed = hits + len(got & wanted), extra + len(got - wanted), missed + len(wanted - got)
        hostile = []
        for html in HOSTILE.values():
            start = time.perf_counter()
            try:
                convert(html)
                hostile.append(f"{time.perf_counter() - start:.2f} s")
            except RecursionError:
                hostile.append("RecursionError")
        precision, recall = hits / max(hits + extra, 1), hits / max(hits + missed, 1)
        p50, p99 = percentile(times, 50), percentile(times, 99)
        rows[label] = p50
        print(
            f"{label:<38} {precision:>9.1%} {recall:>7.1%} {leaks:>6} {p50 * 1000:>7.2f} {p99 * 1000:>7.2f}"
            + "".join(f" {h:>17}" for h in hostile)
        )
    shipped = "lxml pre-pass + inscriptis (shipped)"
    if "inscriptis" in rows:
        record("HTML to text p50, ms", rows[shipped] * 1000, "ms", "inscriptis alone", rows["inscriptis"] * 1000)
    return 0


if __name__ == "__main__":
    sys.exit(main())
