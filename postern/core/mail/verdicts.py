"""Sender verdicts at receive: SPF, DKIM (every signature), DMARC and ARC, evaluated with
dkimpy, pyspf and authheaders' DMARC record discovery, every DNS lookup through one
bounded resolver (docs/trust.md, "Sender verdicts").

A verdict never refuses mail: a lookup that fails or runs out of time gives
``temperror`` and the message is stored all the same.
"""

from __future__ import annotations

import dataclasses
import functools
import importlib.resources
import json
import logging
import re
import threading
import time
from dataclasses import asdict, dataclass, field
from email.utils import getaddresses

import dkim
import dns.exception
import dns.resolver
import spf
from publicsuffix2 import PublicSuffixList

from postern.core.mail.authresults import stamp, stamp_headers

log = logging.getLogger("postern.trust")

#: Lookups one message may make in all (SPF's own limit of 10 applies within it).
MAX_LOOKUPS = 40


class DnsTempError(Exception):
    """A lookup timed out, failed, or the message's budget of time or lookups ran out."""


#: Answers remembered per resolver, each for its TTL: a listener asks about the same
#: senders' keys and policies again and again, as an MTA's resolver cache would spare it.
#: Cached answers count against a message's lookups all the same (RFC 7208 limits).
CACHE_ENTRIES = 10_000


@functools.cache
def shared_resolver(address: str = "") -> dns.resolver.Resolver:
    """One resolver (and cache) per ``[trust] resolver`` value, for every message: the
    cache keys answers by name and type only, so resolvers never share one."""
    if address:
        host, _, port = address.rpartition(":")
        resolver = dns.resolver.Resolver(configure=False)
        resolver.nameservers = [host.strip("[]")]
        resolver.port = int(port)
    else:
        resolver = dns.resolver.Resolver()
    resolver.cache = dns.resolver.LRUCache(CACHE_ENTRIES)
    return resolver


class BoundedLookups:
    """One message's DNS: a resolver (the system's, or ``host:port``), an overall
    deadline and a count of lookups; past either, every lookup is a ``DnsTempError``."""

    def __init__(self, resolver: str = "", timeout: float = 5.0, max_lookups: int = MAX_LOOKUPS):
        self.resolver = shared_resolver(resolver)
        self.deadline = time.monotonic() + timeout
        self.left = max_lookups
        self.temperror = False
        self.failures = 0  # lookups that failed for want of an answer

    def answers(self, name: str, qtype: str) -> list:
        remaining = self.deadline - time.monotonic()
        if remaining <= 0 or self.left <= 0:
            self.temperror = True
            self.failures += 1
            raise DnsTempError(f"DNS budget spent before {qtype} {name}")
        self.left -= 1
        try:
            return list(self.resolver.resolve(name, qtype, lifetime=remaining, search=False))
        except (dns.resolver.NXDOMAIN, dns.resolver.NoAnswer):
            return []
        except (dns.exception.Timeout, dns.resolver.NoNameservers, dns.exception.DNSException) as exc:
            self.temperror = True
            self.failures += 1
            raise DnsTempError(f"{qtype} {name}: {exc}") from None

    def txt(self, name: str) -> list[bytes]:
        return [b"".join(r.strings) for r in self.answers(name, "TXT")]

    # dkimpy's dnsfunc: the first TXT record, or None.
    def dkim_txt(self, name, timeout=5):
        name = name.decode() if isinstance(name, bytes) else name
        try:
            records = self.txt(name.rstrip("."))
        except DnsTempError as exc:
            raise dkim.DnsTimeoutError(str(exc)) from None
        return records[0] if records else None


_current = threading.local()


def _spf_lookup(name, qtype, strict=True, timeout=None):
    """pyspf's DNSLookup, answered by the calling thread's ``BoundedLookups``."""
    lookups: BoundedLookups = _current.lookups
    try:
        records = lookups.answers(name, qtype)
    except DnsTempError as exc:
        raise spf.TempError(f"DNS {exc}") from None
    found = []
    for r in records:
        if qtype in ("A", "AAAA"):
            value = r.address
        elif qtype == "MX":
            value = (r.preference, r.exchange)
        elif qtype == "PTR":
            value = r.target.to_text(True)
        elif qtype in ("TXT", "SPF"):
            value = r.strings
        else:
            continue
        found.append(((name, qtype), value))
    return found


# pyspf reads a module global for its lookups; each verifying thread sets its own resolver.
spf.DNSLookup = _spf_lookup


@dataclass
class Signature:
    domain: str
    selector: str
    result: str  # pass | fail | temperror | permerror


@dataclass
class Verdict:
    spf: str = "none"  # pass | fail | softfail | neutral | none | temperror | permerror
    dkim: list[Signature] = field(default_factory=list)
    dmarc: str = "none"  # pass | fail | none | temperror | permerror
    #: The From domain's published policy (none | quarantine | reject), '' when none.
    dmarc_policy: str = ""
    arc: str = "none"  # pass | fail | none | temperror
    from_domain: str = ""
    #: A passing SPF or DKIM identity aligns with the From domain (DMARC's test).
    aligned: bool = False
    #: The From domain is proven: DMARC passed. The only flag an agent should trust.
    verified_sender: bool = False
    #: Set when checking was off or ran out of time before finishing.
    skipped: str = ""

    def to_dict(self) -> dict:
        return asdict(self)


def _domain(address: str) -> str:
    return address.rpartition("@")[2].strip().strip(">").lower().rstrip(".")


@functools.cache
def _suffixes() -> PublicSuffixList:
    # authheaders ships a current Public Suffix List; read it once, not per message.
    with importlib.resources.files("authheaders").joinpath("public_suffix_list.txt").open(encoding="utf-8") as f:
        return PublicSuffixList(f)


def org_domain(domain: str) -> str:
    """RFC 7489 3.2: the registrable domain. A name under a suffix the list does not
    know counts its last label as the suffix (the list's implicit ``*`` rule)."""
    domain = domain.lower().rstrip(".")
    found = _suffixes().get_sld(domain) or domain
    if "." not in found and domain.count(".") >= 1:
        found = ".".join(domain.split(".")[-2:])
    return found


def _aligned(identity: str, from_domain: str, strict: bool) -> bool:
    if not identity or not from_domain:
        return False
    if strict:
        return identity == from_domain
    return org_domain(identity) == org_domain(from_domain)


def _check_spf(lookups: BoundedLookups, ip: str, mail_from: str, helo: str) -> str:
    if not ip:
        return "none"
    _current.lookups = lookups
    try:
        result = spf.query(ip, mail_from or f"postmaster@{helo}", helo, querytime=0).check()[0]
    except spf.TempError:
        return "temperror"
    except spf.PermError:
        return "permerror"
    finally:
        _current.lookups = None
    return result


def _check_dkim(lookups: BoundedLookups, raw: bytes) -> list[Signature]:
    checker = dkim.DKIM(raw)
    count = sum(1 for name, _ in checker.headers if name.lower() == b"dkim-signature")
    signatures = []
    for index in range(count):
        failures = lookups.failures
        try:
            ok = checker.verify(idx=index, dnsfunc=lookups.dkim_txt)
            # dkimpy answers False, not an error, when its key lookup timed out.
            result = "pass" if ok else ("temperror" if lookups.failures > failures else "fail")
        except dkim.DnsTimeoutError:
            result = "temperror"
        except dkim.ValidationError:  # body hash mismatch, expired, bad tag values
            result = "fail"
        except (dkim.KeyFormatError, dkim.MessageFormatError, dkim.UnknownKeyTypeError):
            result = "permerror"  # no usable key or an unparseable signature (RFC 8601 2.7.1)
        except dkim.DKIMException:
            result = "fail"
        fields = checker.signature_fields or {}
        signatures.append(
            Signature(
                domain=fields.get(b"d", b"").decode("ascii", "replace").lower(),
                selector=fields.get(b"s", b"").decode("ascii", "replace"),
                result=result,
            )
        )
        checker.signature_fields = {}
    return signatures


def _check_arc(lookups: BoundedLookups, raw: bytes) -> str:
    if not re.search(rb"(?im)^arc-seal:", raw.split(b"\r\n\r\n", 1)[0].split(b"\n\n", 1)[0]):
        return "none"
    try:
        cv, _, _ = dkim.arc_verify(raw, dnsfunc=lookups.dkim_txt)
    except dkim.DnsTimeoutError:
        return "temperror"
    except dkim.DKIMException:
        return "fail"
    return cv.decode() if isinstance(cv, bytes) else str(cv)


def _dmarc_tags(lookups: BoundedLookups, domain: str) -> dict:
    records = [r.decode("utf-8", "replace") for r in lookups.txt(f"_dmarc.{domain}")]
    records = [r for r in records if r.startswith("v=DMARC1")]
    if len(records) != 1:  # RFC 7489 6.6.3: none, or more than one, is no policy
        return {}
    tags = {}
    for part in records[0].split(";"):
        name, eq, value = part.partition("=")
        if eq:
            tags[name.strip().lower()] = value.strip().lower()
    return tags


def _dmarc_record(lookups: BoundedLookups, from_domain: str) -> tuple[dict, bool]:
    """The From domain's DMARC tags (RFC 7489 6.6.3: its own, else its organisational
    domain's) and whether they came from the organisational domain."""
    tags = _dmarc_tags(lookups, from_domain)
    if tags:
        return tags, False
    org = org_domain(from_domain)
    if org == from_domain:
        return {}, False
    return _dmarc_tags(lookups, org), True


def _dmarc_policy(lookups, verdict: Verdict) -> dict | None:
    """The From domain's DMARC tags ({} when it publishes none), or None when they could
    not be fetched (``dmarc`` is then temperror)."""
    if not verdict.from_domain:
        return {}
    try:
        tags, from_org = _dmarc_record(lookups, verdict.from_domain)
    except DnsTempError:
        verdict.dmarc = "temperror"
        return None
    if tags:
        verdict.dmarc_policy = tags.get("sp", tags.get("p", "")) if from_org else tags.get("p", "")
    return tags


def _check_dmarc(verdict: Verdict, tags: dict | None, mail_from: str) -> None:
    if not verdict.from_domain:
        return
    tags = tags or {}
    dkim_ok = any(
        s.result == "pass" and _aligned(s.domain, verdict.from_domain, tags.get("adkim") == "s") for s in verdict.dkim
    )
    spf_ok = verdict.spf == "pass" and _aligned(_domain(mail_from), verdict.from_domain, tags.get("aspf") == "s")
    verdict.aligned = dkim_ok or spf_ok
    if verdict.dmarc == "temperror" or not tags:
        return  # unknown, or no policy: DMARC is 'none' whatever aligns
    verdict.dmarc = "pass" if verdict.aligned else "fail"


def evaluate(
    raw: bytes,
    from_address: str,
    mail_from: str,
    client_ip: str,
    helo: str,
    *,
    resolver: str = "",
    timeout: float = 5.0,
) -> Verdict:
    """Every check for one message, all its lookups within ``timeout`` seconds.

    The From domain's DMARC record is fetched first: SPF and DKIM lookups are the
    sender's to choose (an SPF record can spend the whole budget, a key server can stay
    silent), and must not be able to hide a p=reject that the From domain publishes."""
    lookups = BoundedLookups(resolver, timeout)
    verdict = Verdict(from_domain=_domain(from_address) if "@" in from_address else "")
    tags = _dmarc_policy(lookups, verdict)
    verdict.spf = _check_spf(lookups, client_ip, mail_from, helo)
    verdict.dkim = _check_dkim(lookups, raw)
    verdict.arc = _check_arc(lookups, raw)
    _check_dmarc(verdict, tags, mail_from)
    verdict.verified_sender = verdict.dmarc == "pass" and verdict.aligned
    return verdict


def timed_out(from_address: str) -> Verdict:
    """The verdict of a message whose checks did not finish within the bound."""
    return Verdict(
        spf="temperror",
        dmarc="temperror",
        arc="temperror",
        from_domain=_domain(from_address) if "@" in from_address else "",
        skipped="timeout",
    )


# -- Authentication-Results (RFC 8601) -------------------------------------------------


def results_header(authserv_id: str, verdict: Verdict, mail_from: str, helo: str, note: str = "") -> str:
    """Our Authentication-Results value; ``note`` goes after the authserv-id as a
    comment (RFC 8601 2.2 allows one there), e.g. the id of a verdict recorded for it."""
    parts = [f"{authserv_id} ({note})" if note else authserv_id]
    spf_id = f"smtp.mailfrom={mail_from}" if mail_from else f"smtp.helo={helo}"
    parts.append(f"spf={verdict.spf} {spf_id}")
    if verdict.dkim:
        parts.extend(f"dkim={s.result} header.d={s.domain} header.s={s.selector}" for s in verdict.dkim)
    else:
        parts.append("dkim=none")
    parts.append(f"dmarc={verdict.dmarc}" + (f" header.from={verdict.from_domain}" if verdict.from_domain else ""))
    parts.append(f"arc={verdict.arc}")
    return ";\r\n\t".join(_printable(p) for p in parts)


def _printable(text: str) -> str:
    # Sender-chosen names (MAIL FROM, HELO) must not add a clause or a line.
    return re.sub(r"[^\x21-\x3a\x3c-\x7e ]", "?", text)


# -- at receive ------------------------------------------------------------------------


@dataclass(frozen=True)
class Checked:
    """A message as stored after its checks: raw and headers stamped, verdict as JSON."""

    raw: bytes
    parsed: object
    authentication: str


def authserv_id_for(postern) -> str:
    """``[trust] authserv_id``, else the SMTP listener's hostname."""
    if postern.config.trust.authserv_id:
        return postern.config.trust.authserv_id
    options = postern.backend("receive").options
    return getattr(options, "hostname", "") or "postern.localhost"


def single_from(parsed) -> str:
    """The one From address, or '' when there are several From headers or addresses:
    RFC 7489 6.6.1, a verifier and a reader could take different ones (a second From on
    top of a signed message would otherwise borrow its signature)."""
    values = [v for n, v in parsed.headers if n.lower() == "from"]
    if len(values) != 1 or len(getaddresses(values)) != 1 or not parsed.sender:
        return ""
    return parsed.sender.address


def verify(raw: bytes, parsed, mail_from: str, client_ip: str, helo: str, *, resolver: str, timeout: float) -> Verdict:
    sender = single_from(parsed)
    try:
        verdict = evaluate(raw, sender, mail_from, client_ip, helo, resolver=resolver, timeout=timeout)
        if not sender and parsed.sender:
            verdict.dmarc = "permerror"  # a From, but not one: nothing can align with it
        return verdict
    except Exception:  # a bug here must not refuse mail
        log.exception("could not check the sender of a message from %s", mail_from[:320])
        return timed_out(sender)


def checked(
    raw: bytes, parsed, verdict: Verdict, mail_from: str, helo: str, authserv_id: str, note: str = ""
) -> Checked:
    """The message with our Authentication-Results put in and forged ones taken out."""
    value = results_header(authserv_id, verdict, mail_from, helo, note)
    stamped = dataclasses.replace(parsed, headers=stamp_headers(parsed.headers, value, authserv_id))
    return Checked(stamp(raw, value, authserv_id), stamped, json.dumps(verdict.to_dict()))
