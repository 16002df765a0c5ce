"""Readable text from an HTML mail body, bounded in time and memory.

Chosen by measurement (bench/html_text.py, figures in docs/mail.md): lxml parses, a
pre-pass drops what a reader never sees (script, style, head, hidden elements,
tracking pixels), then inscriptis renders the tree as text, keeping the layout of
tables and lists and the links as ``text (url)`` so a verification link survives.

Mail HTML is written by strangers: the input is cut at ``MAX_HTML_BYTES`` and the
tree at ``MAX_ELEMENTS`` before rendering, so hostile HTML costs bounded time.
"""

from __future__ import annotations

import re

import lxml.html
from inscriptis import Inscriptis
from inscriptis.css_profiles import CSS_PROFILES
from inscriptis.model.config import ParserConfig
from lxml import etree

MAX_HTML_BYTES = 512 * 1024
MAX_ELEMENTS = 5000

_DROPPED_TAGS = {"script", "style", "head", "title", "template", "noscript", "object", "embed", "iframe", "svg"}
_HIDDEN_STYLE = re.compile(
    r"display\s*:\s*none|visibility\s*:\s*hidden|(?<![-\w])(?:max-)?height\s*:\s*0(?:px)?\s*(?:;|$|!)"
    r"|font-size\s*:\s*0(?:px)?\s*(?:;|$|!)|opacity\s*:\s*0(?:\.0+)?\s*(?:;|$|!)",
    re.I,
)
_CONFIG = ParserConfig(css=CSS_PROFILES["strict"], display_links=True, display_anchors=False)
_BLANK_LINES = re.compile(r"\n[ \t]*(?:\n[ \t]*)+")


def html_to_text(html: str) -> str:
    """The text a reader of ``html`` sees, links as ``text (url)``; '' for no HTML."""
    if not html or not html.strip():
        return ""
    html = html[:MAX_HTML_BYTES]
    try:
        root = lxml.html.document_fromstring(html)
    except (etree.ParserError, ValueError):
        return ""
    _prune(root)
    text = Inscriptis(root, _CONFIG).get_text()
    lines = (line.rstrip() for line in text.splitlines())
    return _BLANK_LINES.sub("\n\n", "\n".join(lines)).strip()


def _prune(root) -> None:
    """Drop what is never shown, and everything past the element budget."""
    doomed = []
    for count, element in enumerate(root.iter()):
        if count >= MAX_ELEMENTS:
            doomed.append(element)
            continue
        tag = element.tag if isinstance(element.tag, str) else ""
        if not tag:  # comments and processing instructions
            doomed.append(element)
        elif tag.lower() in _DROPPED_TAGS or _hidden(element) or _pixel(element):
            doomed.append(element)
    for element in doomed:
        parent = element.getparent()
        if parent is not None:
            # Keep the tail: it is text that follows the element, not part of it.
            tail = element.tail
            previous = element.getprevious()
            if tail:
                if previous is not None:
                    previous.tail = (previous.tail or "") + tail
                else:
                    parent.text = (parent.text or "") + tail
            parent.remove(element)


def _hidden(element) -> bool:
    if element.get("hidden") is not None or element.get("aria-hidden") == "true":
        return True
    style = element.get("style")
    return bool(style and _HIDDEN_STYLE.search(style))


def _pixel(element) -> bool:
    if element.tag != "img":
        return False
    return element.get("width") in ("0", "1") or element.get("height") in ("0", "1")
