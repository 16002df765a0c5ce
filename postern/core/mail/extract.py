"""One-time codes and verification links in a message, found deterministically.

A code is a short token (4-8 digits, possibly grouped by one space or dash, or 4-10
upper-case letters and digits with at least one digit) that has a code keyword near
it ("code", "Bestätigungscode", "验证码", ...; see ``CODE_KEYWORDS``). Numbers that
are something else are masked before looking: URLs (ids in links), dates and times,
phone numbers, prices and amounts, order/invoice/ticket numbers, and years unless a
keyword sits right before them. A link is a URL whose anchor text or path says it
verifies, confirms, signs in or resets (in the same languages); unsubscribe and
tracking links never count, and links on the sender's own domain come first.

Precision and recall on tests/corpus/codes/ are in docs/mail.md; the extraction is
stored at ingest (``Message.extraction``) so readers and waiters never redo it.
"""

from __future__ import annotations

import bisect
import html as htmllib
import json
import re
from dataclasses import asdict, dataclass, field

MAX_TEXT = 32 * 1024  # codes sit near the top of a mail; bound the scan
MAX_HTML = 512 * 1024  # as htmltext.MAX_HTML_BYTES
MAX_CODES = 3
MAX_LINKS = 3

CODE_KEYWORDS = [
    # English
    "verification code", "security code", "confirmation code", "login code", "sign-in code", "sign in code",
    "one-time code", "one time code", "one-time password", "one-time passcode", "passcode", "otp", "pin",
    "access code", "auth code", "authentication code", "2fa", "code", "token",
    # German
    "bestätigungscode", "verifizierungscode", "sicherheitscode", "einmalcode", "anmeldecode", "zugangscode",
    "einmalpasswort", "prüfcode", "kennung",
    # French
    "code de vérification", "code de confirmation", "code de sécurité", "code à usage unique",
    "code de connexion", "mot de passe à usage unique",
    # Spanish / Portuguese
    "código de verificación", "código de confirmación", "código de seguridad", "código de acceso",
    "código de verificação", "código de confirmação", "código de segurança", "código", "codigo",
    # Italian
    "codice di verifica", "codice di conferma", "codice di sicurezza", "codice di accesso", "codice otp", "codice",
    # Dutch
    "verificatiecode", "bevestigingscode", "beveiligingscode", "inlogcode", "toegangscode", "eenmalige code",
    # Japanese
    "認証コード", "確認コード", "検証コード", "ワンタイムパスワード", "ワンタイムコード", "セキュリティコード",
    "ログインコード", "コード", "認証番号", "確認番号", "暗証番号",
    # Chinese (simplified and traditional)
    "验证码", "驗證碼", "校验码", "校驗碼", "动态码", "動態碼", "确认码", "確認碼", "安全码", "安全碼",
    "一次性密码", "一次性密碼", "登录码", "登入碼", "代码", "代碼",
]  # fmt: skip
# Longest first, so "verification code" is the evidence rather than "code".
_KEYWORD_ALTERNATIVES = "|".join(re.escape(k.lower()) for k in sorted(CODE_KEYWORDS, key=len, reverse=True))
# Matched against the lowered text: a case-sensitive alternation of literals lets the
# regex engine skip ahead by their first characters, which re.I prevents (~6x faster on
# 2 KB; this scan and the order-number mask were over half of a message's ingest CPU).
_KEYWORD = re.compile(_KEYWORD_ALTERNATIVES)
_KEYWORD_ANY_CASE = re.compile(_KEYWORD_ALTERNATIVES, re.I)  # when lowering moves offsets


def _first_chars(alternatives: str) -> str:
    """A lookahead admitting only where one of ``alternatives`` (plain words joined by
    ``|``) can start, in either case: under re.I the engine cannot skip by first
    characters on its own, and tries every alternative at every position."""
    starts = {c for word in alternatives.split("|") for c in (word[0].lower(), word[0].upper())}
    return f"(?=[{''.join(re.escape(c) for c in sorted(starts))}])"


# "Use code BF2026 for 40% off": what follows a token can make it a promo code too.
_PROMO_AFTER = re.compile(
    r".{0,20}?(?:\d\s?%|\boff\b|rabatt|réduction|descuento|desconto|sconto|korting|割引|折扣|优惠)", re.I
)
_LATIN = re.compile(r"[a-z]", re.I)
# "promo code SAVE20" is a code a model must not type into a verification form.
_PROMO = re.compile(
    r"promo|coupon|discount|voucher|gift|referral|reward|bonus|prämie|gutschein|rabatt|réduction|promotionnel|descuento|cupón|cupom"
    r"|desconto|sconto|buono|korting|kortings|クーポン|割引|优惠|折扣|兑换",
    re.I,
)

# What a code looks like. Lookarounds instead of \b: CJK letters are \w, so "验证码123456"
# has no word boundary before the digits.
_WORD = "0-9A-Za-zÀ-ÿ_"
_EDGE_L = rf"(?<![{_WORD}.,/@#$€£¥+-])"
_EDGE_R = rf"(?![{_WORD}/@%€£¥]|[.,]\d|-[{_WORD}])"
_CODE = re.compile(
    _EDGE_L
    + r"(?:"
    + r"\d{3,4}[ -]\d{3,4}"  # 123 456, 1234-5678
    + r"|\d{2}[ -]\d{2}[ -]\d{2}"  # 12 34 56
    + r"|\d{4,8}"
    + r"|(?=[A-Z0-9-]{0,10}\d)(?=[A-Z0-9-]{0,10}[A-Z])[A-Z0-9]{3,5}-[A-Z0-9]{3,5}"  # K7P-2QX
    + r"|(?=[A-Z0-9]{0,9}\d)(?=[A-Z0-9]{0,9}[A-Z])[A-Z0-9]{4,10}"  # X7K2P9
    + r")"
    + _EDGE_R
)

# Numbers that are not codes: masked (replaced by spaces, offsets kept) before looking.
_ORDER_WORDS = (
    "order|invoice|ticket|case|customer|account|reference|ref|booking|tracking|shipment|transaction"
    "|bestellung|bestellnummer|rechnung|kundennummer|auftrag|commande|facture|pedido|factura|encomenda"
    "|fatura|ordine|fattura|bestelling|factuur|klantnummer|kontonummer|iban|注文番号|注文|订单号|订单|訂單|发票"
    "|お問い合わせ番号"
)
_MONEY = r"(?:[$€£¥₹]|USD|EUR|GBP|JPY|CHF|R\$|元|円)"
_NOT_CODES = [
    re.compile(r"(?:https?://|www\.)[^\s<>\"'\])]{1,2000}", re.I),
    re.compile(r"(?<![\w.+-])[\w.+-]{1,64}@[\w-]{1,63}(?:\.[\w-]{1,63}){1,8}"),
    # Dates and times: 2026-05-06, 06/05/2026, 6.5.2026, 12:30, 2026年5月6日.
    re.compile(r"\d{1,4}[./-]\d{1,2}[./-]\d{1,4}"),
    re.compile(r"\d{1,2}:\d{2}(?::\d{2})?"),
    re.compile(r"\d{2,4}\s*年\s*\d{1,2}\s*月(?:\s*\d{1,2}\s*日)?"),
    # Phone numbers: +49 30 1234567, (555) 123-4567, 0800 123 4567.
    re.compile(r"\+\d{1,3}[\s.-]?(?:\(?\d{1,5}\)?[\s.-]?){1,4}\d{2,6}"),
    re.compile(r"\(\d{2,5}\)\s?\d{3,4}[\s.-]?\d{3,5}"),
    re.compile(r"\d(?<!\d\d)\d(?:[\s.-]\d{2}){3,6}(?!\d)"),  # 01 23 45 67 89
    re.compile(r"\d(?<!\d\d)\d{2,3}[\s.-]\d{3}[\s.-]\d{3,4}(?!\d)"),
    # Prices and amounts: $12.99, 1.299,00 €, 25 EUR, 3000円.
    re.compile(_first_chars("$|€|£|¥|₹|USD|EUR|GBP|JPY|CHF|R|元|円") + _MONEY + r"\s?\d[\d.,' ]{0,16}\d?", re.I),
    re.compile(r"\d(?<![\d.,']\d)[\d.,']{0,16}\s?" + _MONEY, re.I),
    re.compile(
        r"\d(?<![\d.,]\d)\d{0,5}(?:[.,]\d{1,4})?\s?(?:%|percent|prozent|pour cent|por ciento|per cento|procent)", re.I
    ),
    re.compile(r"#\s?[A-Z0-9-]{3,40}", re.I),
]
# Order, invoice, ticket, customer and reference numbers, in the supported languages.
# Matched against the lowered text, as the keywords are, where it runs ~4x faster than
# under re.I; the classes name lower-case letters for that reason.
_ORDER_NUMBER = (
    f"(?:{_ORDER_WORDS})"
    r"[ \t\w.]{0,12}?(?:#|no\.?|nr\.?|n°|nº|number|nummer|numéro|número|numero|id)?"
    r"[ \t]*[:#：]?[ \t]*(?=[a-z-]{0,40}\d)[a-z0-9-]{3,40}(?:[ \t]\d{2,6}){0,6}"
)
_ORDER = re.compile(_ORDER_NUMBER)
_ORDER_ANY_CASE = re.compile(_ORDER_NUMBER, re.I)
_YEAR = re.compile(r"(?:19|20)\d\d")
_BEFORE = 60  # characters a keyword may precede a code by ("Your verification code is: ")
_AFTER = 40  # ... or follow it by ("123456 is your code")

LINK_KINDS = {
    "reset": [
        "reset", "password", "passwort", "kennwort", "zurücksetzen", "réinitialiser", "mot de passe",
        "restablecer", "contraseña", "redefinir", "senha", "reimposta", "herstel", "wachtwoord",
        "パスワード", "リセット", "重置", "密码", "密碼",
    ],
    "magic": [
        "magic", "sign in", "sign-in", "signin", "log in", "log-in", "login", "anmelden", "einloggen",
        "se connecter", "connexion", "iniciar sesión", "iniciar sessão", "entrar", "accedi", "accesso",
        "inloggen", "aanmelden", "ログイン", "サインイン", "登录", "登入",
    ],
    "verify": [
        "verify", "verification", "confirm", "activate", "activation", "validate", "bestätigen", "bestaetigen",
        "verifizieren", "aktivieren", "confirmer", "vérifier", "verifier", "valider", "activer", "verificar",
        "confirmar", "activar", "ativar", "confirmação", "verifica", "conferma", "attiva", "bevestig",
        "verifieer", "verifiëren", "activeer", "確認", "認証", "有効化", "验证", "驗證", "确认", "確認", "激活",
    ],
}  # fmt: skip
_NOT_LINKS = re.compile(
    r"unsubscribe|opt[-_ ]?out|preferences|email-settings|notification-settings|abmelden|abbestellen"
    r"|désabonner|desabonner|désinscri|darse de baja|baja|cancelar[- ]inscri|descadastr|disiscriv"
    r"|annulla[- ]iscrizione|afmelden|uitschrijven|配信停止|退订|取消订阅|/track/open|/open\.gif|/wf/open"
    r"|pixel|beacon|/o/[\w-]+\.gif|list-manage\.com|privacy|datenschutz|terms|/help|support\.|/support",
    re.I,
)
# Bounded repeats throughout: an unclosed <a or a 64 KiB run of digits must not make
# any pattern quadratic (tests/test_extract.py times the worst inputs).
_OPEN_A = re.compile(r"<a\s[^<>]{0,2000}+>", re.I)  # possessive: no backtracking on "<a href='<a href='..."
_HREF = re.compile(r"\bhref\s*=\s*(?:\"([^\"]*)\"|'([^']*)'|([^\s\"'>]+))", re.I)
_TAG = re.compile(r"<[^>]+>")
_URL = re.compile(r"https?://[^\s<>\"'\])]{1,2000}", re.I)
_MD_LINK = re.compile(r"\[([^\]]{0,200})\]\((https?://[^)\s]{1,1000})\)")


@dataclass(frozen=True)
class Code:
    #: What to type: as written, without the spaces or dashes that group digits.
    value: str
    #: As it appears in the message ("123 456").
    as_written: str
    #: The keyword that marks it as a code ("verification code", "验证码").
    evidence: str


@dataclass(frozen=True)
class Link:
    url: str
    kind: str  # verify, magic (sign-in), reset
    #: The anchor text or URL word that says what the link does.
    evidence: str
    #: Whether the link is on the sender's own domain.
    sender_domain: bool = False


@dataclass(frozen=True)
class Extraction:
    codes: list[Code] = field(default_factory=list)
    links: list[Link] = field(default_factory=list)

    def to_json(self) -> str:
        if not self.codes and not self.links:
            return ""
        return json.dumps({"codes": [asdict(c) for c in self.codes], "links": [asdict(x) for x in self.links]})

    @classmethod
    def from_json(cls, stored: str | None) -> Extraction:
        if not stored:
            return EMPTY
        data = json.loads(stored)
        return cls([Code(**c) for c in data.get("codes", [])], [Link(**x) for x in data.get("links", [])])

    @classmethod
    def stored(cls, message) -> Extraction:
        """What ingest found in ``message`` (a ``Message`` row), without re-reading its body."""
        return cls.from_json(getattr(message, "extraction", ""))


EMPTY = Extraction()


def extract(subject: str, text: str, html: str = "", sender: str = "") -> Extraction:
    """Codes and links of one message. ``text`` is the readable body (for HTML-only
    mail, the text derived from ``html``); ``html`` adds the anchors' targets."""
    # The subject is a sentence of its own: a keyword in it must not reach into the body.
    body = f"{subject}\n.\n{text[:MAX_TEXT]}"
    return Extraction(_codes(body), _links(text[:MAX_TEXT], html, _domain_of(sender)))


def _codes(body: str) -> list[Code]:
    lowered = _lowered(body)
    if lowered is not None and not _KEYWORD.search(lowered):
        # Most mail names no code keyword: then neither does its masked text (masking
        # turns runs of 2+ characters into spaces, which cannot complete a keyword), and
        # the masking that was most of extraction's time is skipped.
        return []
    masked = _mask(body)
    # A promo-code keyword stays in the list so that it, being nearest, can veto its token.
    keywords = [
        (m.start(), m.end(), None if _promo(masked, m.start()) else m.group(0).lower())
        for m in _keywords(masked)
        if _whole_word(masked, m)
    ]
    if not keywords:
        return []
    ends = [k_end for _, k_end, _ in keywords]
    candidates = [
        m for m in _CODE.finditer(masked) if not _overlaps(m, keywords, ends) and not _PROMO_AFTER.match(body, m.end())
    ]
    found: dict[str, tuple[int, Code]] = {}
    for m, distance, keyword in _paired(masked, keywords, candidates):
        written = m.group(0)
        digits = written.replace(" ", "").replace("-", "")
        if digits.isdigit() and len(digits) == 4 and _YEAR.fullmatch(digits) and distance > 12:
            continue
        if not digits.isdigit() and _looks_like_word(written):
            continue
        value = digits if digits.isdigit() else written.replace(" ", "")
        if value not in found or distance < found[value][0]:
            found[value] = (distance, Code(value, written, keyword))
    ranked = sorted(found.values(), key=lambda item: item[0])
    return [code for _, code in ranked[:MAX_CODES]]


def _lowered(text: str) -> str | None:
    """``text`` lowered, when matching its lower case equals matching ``text`` under
    re.I for our patterns; else None (use the re.I pattern). "İ" lowers to two
    characters (offsets would move); re.I matches "ı" to "i" and "ſ" to "s", which
    ``lower()`` keeps as they are."""
    lowered = text.lower()
    if len(lowered) != len(text) or ("ı" in lowered or "ſ" in lowered):
        return None
    return lowered


def _keywords(masked: str):
    lowered = _lowered(masked)
    return _KEYWORD_ANY_CASE.finditer(masked) if lowered is None else _KEYWORD.finditer(lowered)


def _paired(text: str, keywords, candidates):
    """Each keyword marks at most the first candidate after it ("code: 123456") and the
    last one before it ("123456 is your code"), within reach and in the same sentence
    (unless the code stands alone on its line, as in "Your code is below:\n\n123456").
    So "PIN: 5821 ... Room 1204" yields 5821 only."""
    starts = [m.start() for m in candidates]
    for k_start, k_end, word in keywords:
        after = bisect.bisect_left(starts, k_end)
        if after < len(candidates):
            m = candidates[after]
            distance = m.start() - k_end
            if distance <= _BEFORE and _same_sentence(text, k_end, m):
                if word is not None:
                    yield m, distance, word
        before = bisect.bisect_left(starts, k_start) - 1
        if before >= 0:
            m = candidates[before]
            distance = k_start - m.end()
            if 0 <= distance <= _AFTER and _same_sentence(text, m.end(), m, k_start) and word is not None:
                yield m, distance, word


_SENTENCE_END = re.compile(r"[.!?](?:\s|$)|[。！？]|\n[ \t]*\n")  # a blank line ends a paragraph


def _same_sentence(text: str, start: int, m: re.Match, end: int | None = None) -> bool:
    between = text[start : m.start()] if end is None else text[start:end]
    if not _SENTENCE_END.search(between):
        return True
    line_start = text.rfind("\n", 0, m.start()) + 1
    line_end = text.find("\n", m.end())
    line = text[line_start : len(text) if line_end < 0 else line_end]
    return line.strip(" \t*:.-") == m.group(0)


def _overlaps(m: re.Match, keywords, ends: list[int]) -> bool:
    """Whether a keyword overlaps the token ("2FA"); keywords are sorted and disjoint."""
    i = bisect.bisect_right(ends, m.start())
    return i < len(keywords) and keywords[i][0] < m.end()


def _mask(body: str) -> str:
    chars = list(body)
    lowered = _lowered(body)
    orders = _ORDER_ANY_CASE.finditer(body) if lowered is None else _ORDER.finditer(lowered)
    for found in (*(pattern.finditer(body) for pattern in _NOT_CODES), orders):
        for m in found:
            chars[m.start() : m.end()] = " " * (m.end() - m.start())
    return "".join(chars)


def _whole_word(text: str, m: re.Match) -> bool:
    """Latin keywords must stand alone ("pin" is not in "shopping"); CJK ones need not."""
    if not _LATIN.search(m.group(0)):
        return True
    before = text[m.start() - 1] if m.start() else " "
    after = text[m.end()] if m.end() < len(text) else " "
    return not (before.isalpha() or after.isalpha())


def _promo(text: str, start: int) -> bool:
    line_start = text.rfind("\n", 0, start) + 1
    return bool(_PROMO.search(text[max(line_start, start - 20) : start]))


def _looks_like_word(token: str) -> bool:
    """Upper-case tokens with a digit that are not codes: "MP3", "COVID19", "A4"."""
    letters = sum(c.isalpha() for c in token)
    return letters > 0 and token.rstrip("0123456789") in {"COVID", "MP", "USB", "HTML", "ISO", "UTF", "SHA", "IPV"}


def _links(text: str, html: str, sender_domain: str) -> list[Link]:
    seen: dict[str, Link] = {}
    for url, label in _candidates(text, html):
        if url in seen or _NOT_LINKS.search(url) or _NOT_LINKS.search(label):
            continue
        kind, evidence = _kind(label) or _kind(_path_words(url)) or (None, "")
        if kind is None:
            continue
        host = _host(url)
        own = bool(sender_domain) and (host == sender_domain or host.endswith("." + sender_domain))
        seen[url] = Link(url, kind, evidence, own)
    ranked = sorted(seen.values(), key=lambda link: not link.sender_domain)
    return ranked[:MAX_LINKS]


def _candidates(text: str, html: str):
    if html:
        html = html[:MAX_HTML]
        for m in _OPEN_A.finditer(html):
            href = _HREF.search(m.group(0))
            if href is None:
                continue
            url = htmllib.unescape(next(g for g in href.groups() if g is not None)).strip()
            if url.lower().startswith(("http://", "https://")):
                close = html.find("</a", m.end(), m.end() + 1000)
                label = html[m.end() : close] if close >= 0 else ""
                yield url, " ".join(htmllib.unescape(_TAG.sub(" ", label)).split())
    for m in _MD_LINK.finditer(text):
        yield m.group(2), m.group(1)
    for m in _URL.finditer(text):
        yield m.group(0).rstrip(".,;:!?"), _introduction(text, m.start())


def _introduction(text: str, start: int) -> str:
    """What introduces a bare URL: the text before it on its line, or the line above,
    when that ends with a colon ("Confirm your account: https://..."). Anything else
    ("... your password may be compromised. Visit https://...") says nothing about it."""
    line_start = text.rfind("\n", 0, start) + 1
    before = text[line_start:start].strip()
    if not before and line_start > 1:
        above_start = text.rfind("\n", 0, line_start - 1) + 1
        before = text[above_start : line_start - 1].strip()
    return before[-80:] if before.endswith((":", "：")) else ""


def _kind(words: str) -> tuple[str, str] | None:
    lowered = words.lower()
    for kind, keywords in LINK_KINDS.items():
        for keyword in keywords:
            if keyword in lowered:
                return kind, keyword
    return None


def _path_words(url: str) -> str:
    rest = url.split("://", 1)[-1]
    path = rest[rest.find("/") :] if "/" in rest else ""
    return re.sub(r"[/_?=&.-]+", " ", path)


def _host(url: str) -> str:
    host = url.split("://", 1)[-1].split("/", 1)[0].split("?", 1)[0].rsplit("@", 1)[-1].split(":", 1)[0]
    return host.lower()


def _domain_of(address: str) -> str:
    """The sender's domain without its first label when it has more than two
    ("mail.example.com" -> "example.com"), so links on www.example.com count as its own."""
    domain = address.rpartition("@")[2].lower().strip()
    labels = domain.split(".")
    return ".".join(labels[-2:]) if len(labels) > 2 else domain
