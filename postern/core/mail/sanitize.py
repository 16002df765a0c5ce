"""HTML mail made safe to show a human in the web console.

Mail HTML is written by strangers, so it is sanitised with nh3 (the Python binding of
the Rust ``ammonia`` crate, which parses with the browser-grade ``html5ever``) against a
deliberately small allow-list, and then framed in a document that is served with a
restrictive Content-Security-Policy inside ``<iframe sandbox>``. Either layer alone
should stop script; together they also stop the quieter attacks mail is known for:

* tracking and read receipts: remote ``src``/``srcset``/``background``/``poster``,
  ``<a ping>``, CSS ``url()``; remote images are dropped unless the reader asks for them;
* CSS exfiltration and UI redressing: no ``<style>`` element, no ``style`` attribute,
  no ``class``/``id`` (there is no stylesheet for them to hook into);
* phishing forms: no ``form``/``input``/``button``/``select``/``textarea``;
* re-parsing tricks (mXSS): ``svg`` and ``math`` are not allowed at all, so no foreign
  content is ever serialised; ``noscript``/``template``/raw-text elements are dropped
  with their content.

A 100 KB, 3 400-tag newsletter takes about 3 ms per call (nh3 0.3.8; the Python
``attribute_filter`` callback is about 0.5 ms of that). Hostile input is bounded, see
``MAX_HTML_CHARS`` and ``MAX_TAGS``.
"""

from __future__ import annotations

import base64
import html as _html
import re

import nh3

# Same budget as htmltext.MAX_HTML_BYTES: characters of HTML looked at at all.
MAX_HTML_CHARS = 512 * 1024

# html5ever's tree builder walks the stack of open elements for many tokens (the "has
# an element in scope" checks), so deeply nested input costs time quadratic in its
# depth: 20 000 nested <div> take over a second, 100 000 over thirty. The depth cannot
# exceed the number of start tags, and counting ``<`` followed by a letter can only
# over-count those (comments, attribute values and text also match), never under-count,
# so cutting the input before the ``MAX_TAGS + 1``-th such ``<`` bounds the worst case
# whatever the markup (the worst pattern found, 4 000 nested <font> then 3 000 <p>,
# takes under 0.4 s). An ordinary 100 KB newsletter has two to four thousand tags.
MAX_TAGS = 10_000
_TAG_START = re.compile(r"<[A-Za-z]")

TRUNCATED_NOTE = "<hr><p>[Postern: the rest of this message was cut for display.]</p>"

_TAGS = frozenset(
    {
        "a", "abbr", "b", "big", "blockquote", "br", "caption", "center", "cite", "code", "col", "colgroup",
        "dd", "del", "div", "dl", "dt", "em", "font", "h1", "h2", "h3", "h4", "h5", "h6", "hr", "i", "img",
        "ins", "kbd", "li", "ol", "p", "pre", "q", "s", "small", "span", "strike", "strong", "sub", "sup",
        "table", "tbody", "td", "tfoot", "th", "thead", "tr", "tt", "u", "ul", "wbr",
    }
)  # fmt: skip

# Dropped together with everything inside them. nh3's default is only script and
# style, and passing a set replaces that default, so both are listed again. The others
# would otherwise leave their raw text (or escaped markup) visible: <title> from a full
# document, <noscript>/<noembed>/<noframes> (parsed as raw text, so their "HTML" shows
# as literal tags), <textarea>/<xmp>/<plaintext>, and the fallback text of <iframe>.
_CLEAN_CONTENT_TAGS = frozenset(
    {
        "script", "style", "title", "head", "noscript", "noembed", "noframes", "template", "textarea",
        "xmp", "plaintext", "iframe", "select", "option", "object", "embed", "applet", "svg", "math",
    }
)  # fmt: skip

# Presentational attributes mail relies on. Nothing here holds a URL except a[href]
# and img[src], which ``_filter_attribute`` checks; deliberately absent: style, class,
# id, name, srcset, background, ping, poster, cite, longdesc, usemap, target, and all
# event handlers (ammonia allows no on* attribute that is not listed).
_ATTRIBUTES = {
    "*": {"title", "lang", "dir", "align"},
    "a": {"href"},
    "img": {"src", "alt", "width", "height", "border", "hspace", "vspace"},
    "table": {"width", "border", "cellpadding", "cellspacing", "bgcolor", "summary"},
    "tr": {"valign", "bgcolor"},
    "thead": {"valign"},
    "tbody": {"valign"},
    "tfoot": {"valign"},
    "td": {"colspan", "rowspan", "width", "height", "valign", "bgcolor", "nowrap"},
    "th": {"colspan", "rowspan", "width", "height", "valign", "bgcolor", "nowrap", "scope"},
    "col": {"span", "width", "valign"},
    "colgroup": {"span", "width", "valign"},
    "font": {"color", "face", "size"},
    "ol": {"start", "type", "reversed"},
    "ul": {"type"},
    "li": {"value", "type"},
    "hr": {"width", "size", "noshade"},
}

# ammonia checks every URL attribute against one scheme list; the per-attribute rules
# (no cid:/data: links, no remote images by default) are enforced by the filter below.
_URL_SCHEMES = {"http", "https", "mailto", "cid", "data"}

_LINK = re.compile(r"(?:https?|mailto):", re.I)
_LOCAL_IMAGE = re.compile(r"cid:|data:image/(?:png|gif|jpeg|webp);base64,[A-Za-z0-9+/=\s]*\Z", re.I)
_REMOTE_IMAGE = re.compile(r"https?://", re.I)
# What browsers strip from either end of a URL before parsing it (C0 controls and space).
_URL_TRIM = "".join(chr(c) for c in range(0x21))


def _filter_attribute(remote_images: bool):
    def keep(tag: str, attr: str, value: str) -> str | None:
        # nh3 calls this after its own URL checks with the entity-decoded value, and
        # does not check what it returns: return the value unchanged or None only.
        if attr == "href" and tag == "a":
            return value if _LINK.match(value.strip(_URL_TRIM)) else None
        if attr == "src" and tag == "img":
            src = value.strip(_URL_TRIM)
            if _LOCAL_IMAGE.match(src) or (remote_images and _REMOTE_IMAGE.match(src)):
                return value
            return None
        return value

    return keep


def _cleaner(remote_images: bool) -> nh3.Cleaner:
    return nh3.Cleaner(
        tags=set(_TAGS),
        clean_content_tags=set(_CLEAN_CONTENT_TAGS),
        attributes={tag: set(names) for tag, names in _ATTRIBUTES.items()},
        attribute_filter=_filter_attribute(remote_images),
        strip_comments=True,
        link_rel="noopener noreferrer",
        # Overrides any referrerpolicy the sender set, should remote images be loaded.
        set_tag_attribute_values={"img": {"referrerpolicy": "no-referrer"}},
        url_schemes=set(_URL_SCHEMES),
        # Relative URLs would resolve against the console's own origin (or be
        # scheme-relative //host links); mail has no base to be relative to.
        url_relative="deny",
    )


_CLEANERS = {False: _cleaner(False), True: _cleaner(True)}


def sanitize_html(html: str, *, remote_images: bool = False) -> str:
    """``html`` with everything but inert formatting removed, ready to go in a <body>.

    Links keep only http, https and mailto targets and get ``rel="noopener
    noreferrer"``. Images keep ``cid:`` and base64 png/gif/jpeg/webp ``data:`` sources,
    and http(s) ones only when ``remote_images`` is true. Input past
    ``MAX_HTML_CHARS`` or ``MAX_TAGS`` is cut and ``TRUNCATED_NOTE`` appended.
    """
    if not html:
        return ""
    truncated = False
    if len(html) > MAX_HTML_CHARS:
        html, truncated = html[:MAX_HTML_CHARS], True
    cut = _tag_budget_end(html)
    if cut is not None:
        html, truncated = html[:cut], True
    clean = _CLEANERS[bool(remote_images)].clean(html)
    return clean + TRUNCATED_NOTE if truncated else clean


_CID_SRC = re.compile(r' src="cid:([^"]*)"', re.I)
_INLINE_TYPES = {"image/png", "image/gif", "image/jpeg", "image/webp"}
#: Inline images larger than this are left out of the frame rather than inlined.
MAX_INLINE_IMAGE_BYTES = 2 * 1024 * 1024


def resolve_cid_images(clean_html: str, images: dict[str, tuple[str, bytes]]) -> str:
    """Point the ``cid:`` images of sanitised HTML at the message's own parts, as
    ``data:`` URLs (browsers cannot fetch ``cid:``, and a sandboxed frame has no
    session to fetch a console URL with). ``images``: Content-ID (without <>) to
    (content type, bytes). A ``cid:`` with no matching image part loses its ``src``.

    Works on ``sanitize_html`` output only: nh3 writes every attribute double-quoted
    with ``"`` escaped, so the pattern cannot be fooled by the sender's markup, and the
    URL put in is built here from a fixed set of image types."""
    found = {cid.strip("<>").lower(): part for cid, part in images.items()}

    def replace(match: re.Match) -> str:
        part = found.get(_html.unescape(match.group(1)).strip("<>").lower())
        if part is None or part[0].lower() not in _INLINE_TYPES or len(part[1]) > MAX_INLINE_IMAGE_BYTES:
            return ""
        return f' src="data:{part[0].lower()};base64,{base64.b64encode(part[1]).decode()}"'

    return _CID_SRC.sub(replace, clean_html)


def _tag_budget_end(html: str) -> int | None:
    """Index of the ``MAX_TAGS + 1``-th tag-like ``<``, or None when within budget."""
    if html.count("<") <= MAX_TAGS:
        return None
    for count, match in enumerate(_TAG_START.finditer(html), 1):
        if count > MAX_TAGS:
            return match.start()
    return None


def content_security_policy(*, remote_images: bool) -> str:
    """The CSP header value to serve a ``frame_document`` with.

    * ``default-src 'none'`` with no ``script-src``: no script, font, media, frame,
      object or fetch from anywhere, even if the sanitiser let something through.
    * ``img-src data: cid:`` (+ ``http: https:`` on request): the only loads allowed.
      Browsers cannot fetch ``cid:`` themselves; a caller that rewrites ``cid:`` sources
      to an attachment URL must add that origin here (or inline them as ``data:``).
    * ``style-src 'none'``: the sanitiser strips every <style> element and style
      attribute, so nothing legitimate is lost and CSS exfiltration (``url()``,
      attribute selectors) stays impossible if one ever slipped through.
    * ``sandbox`` with no tokens: an opaque origin, no script, no forms, no popups, no
      top navigation -- the same as the <iframe sandbox> the console embeds it in, but
      it also holds if the document is opened directly in a tab.
    * ``base-uri 'none'``, ``form-action 'none'``: no <base> hijack, no form posts.
    * ``frame-ancestors 'self'``: only the console may frame it (clickjacking); matched
      against the URL's origin, so it holds under ``sandbox`` too (the console's frame
      loads in tests/test_console_browser.py).
    """
    images = "img-src data: cid:" + (" https: http:" if remote_images else "")
    return (
        f"default-src 'none'; {images}; style-src 'none'; sandbox; base-uri 'none'; "
        "form-action 'none'; frame-ancestors 'self'"
    )


def frame_document(body_html: str, *, remote_images: bool) -> tuple[str, str]:
    """A complete HTML document showing ``body_html``, and the CSP header to serve it with.

    ``body_html`` is sanitised here with the same ``remote_images`` choice the policy is
    built for (sanitising is idempotent, so already-clean HTML passes unchanged), so the
    document is safe whatever the caller passed. Serve it as ``text/html;
    charset=utf-8`` with the returned value as ``Content-Security-Policy``, and embed
    it in ``<iframe sandbox>`` (no allow-scripts, no allow-same-origin). The same policy
    minus the directives a <meta> cannot carry (sandbox, frame-ancestors) is repeated
    in the document, for callers that use ``srcdoc`` where no header applies.
    """
    policy = content_security_policy(remote_images=remote_images)
    meta_policy = "; ".join(part for part in policy.split("; ") if not part.startswith(("sandbox", "frame-ancestors")))
    body = sanitize_html(body_html, remote_images=remote_images)
    document = (
        "<!DOCTYPE html>\n"
        '<html><head><meta charset="utf-8">'
        f'<meta http-equiv="Content-Security-Policy" content="{_html.escape(meta_policy, quote=True)}">'
        '<meta name="referrer" content="no-referrer">'
        "<title>Message</title></head>\n"
        f"<body>{body}</body></html>\n"
    )
    return document, policy
