"""Reachability probes a backend's ``probe`` builds its findings with: a TCP connect,
an SMTP or LMTP greeting and EHLO (never a MAIL command), an HTTP(S) request.

Each returns one ``Finding``: ``detail`` names the host for the operator, ``reason``
says what went wrong without it (``/healthz`` shows only that)."""

from __future__ import annotations

import smtplib
import socket
import ssl

from postern.core.doctor.report import Finding, fail, ok


def describe(exc: BaseException, timeout: float) -> str:
    """``exc`` in a few words that name no host."""
    if isinstance(exc, ConnectionRefusedError):
        return "connection refused"
    if isinstance(exc, TimeoutError | socket.timeout):
        return f"no answer within {timeout:g} s"
    if isinstance(exc, socket.gaierror):
        return "the host name does not resolve"
    if isinstance(exc, ssl.SSLCertVerificationError):
        return f"its TLS certificate is not trusted ({exc.verify_message})"
    if isinstance(exc, ssl.SSLError):
        return f"TLS failed ({exc.reason or type(exc).__name__})"
    if isinstance(exc, smtplib.SMTPServerDisconnected):
        return "it closed the connection"
    if isinstance(exc, smtplib.SMTPResponseException):
        return f"it answered {exc.smtp_code}"
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror.lower()
    return type(exc).__name__


def smtp(
    check: str,
    what: str,
    host: str,
    port: int,
    *,
    fix: str,
    timeout: float,
    lmtp: bool = False,
    starttls: bool = False,
    ca_file: str | None = None,
    helo: str | None = None,
) -> Finding:
    """Connect to an SMTP (or LMTP) server, read its greeting, say EHLO (LHLO), STARTTLS
    when asked (the certificate checked as sending would), and QUIT: no mail is sent."""
    where = f"{what} at {host}:{port}"
    client_class = smtplib.LMTP if lmtp else smtplib.SMTP
    client = client_class(local_hostname=helo or "postern-doctor.invalid", timeout=timeout)
    try:
        with client:
            code, _ = client.connect(host, port)
            if code != 220:
                return fail(check, f"{where} greeted with {code}, not 220", fix, f"it greeted with {code}")
            code, _ = client.ehlo()
            if code != 250:
                return fail(check, f"{where} answered {code} to EHLO", fix, f"it answered {code} to EHLO")
            if starttls:
                if not client.has_extn("starttls"):
                    return fail(check, f"{where} does not offer STARTTLS", fix, "it does not offer STARTTLS")
                client.starttls(context=ssl.create_default_context(cafile=ca_file or None))
    except (OSError, smtplib.SMTPException) as exc:
        reason = describe(exc, timeout)
        return fail(check, f"{where}: {reason}", fix, reason)
    return ok(check, f"{where} answers{' (STARTTLS verified)' if starttls else ''}")


def tcp(check: str, what: str, host: str, port: int, *, fix: str, timeout: float) -> Finding:
    """Open a TCP connection and close it."""
    try:
        socket.create_connection((host, port), timeout=timeout).close()
    except OSError as exc:
        reason = describe(exc, timeout)
        return fail(check, f"{what} at {host}:{port}: {reason}", fix, reason)
    return ok(check, f"{what} at {host}:{port} accepts connections")


def http(
    check: str,
    what: str,
    url: str,
    *,
    fix: str,
    timeout: float,
    headers: dict | None = None,
    verify: bool | str = True,
    any_answer: bool = False,
) -> Finding:
    """GET ``url``. With ``any_answer`` every HTTP response counts (the server is there,
    TLS and all: an endpoint that wants credentials answers 401); otherwise a 4xx or
    5xx fails, a 401/403 as credentials refused."""
    import httpx

    try:
        resp = httpx.get(url, headers=headers or {}, timeout=timeout, verify=verify, follow_redirects=False)
    except httpx.TimeoutException:
        reason = f"no answer within {timeout:g} s"
        return fail(check, f"{what} at {url}: {reason}", fix, reason)
    except httpx.HTTPError as exc:
        cause = exc.__cause__ or exc.__context__
        reason = describe(cause, timeout) if isinstance(cause, OSError) else _httpx_reason(exc)
        return fail(check, f"{what} at {url}: {reason}", fix, reason)
    if any_answer or resp.status_code < 400:
        return ok(check, f"{what} at {url} answers (HTTP {resp.status_code})")
    if resp.status_code in (401, 403):
        reason = f"credentials refused (HTTP {resp.status_code})"
    else:
        reason = f"answered HTTP {resp.status_code}"
    return fail(check, f"{what} at {url}: {reason}", fix, reason)


def _httpx_reason(exc: Exception) -> str:
    text = str(exc).lower()
    if "refused" in text:
        return "connection refused"
    if "certificate" in text:
        return "its TLS certificate is not trusted"
    if "name or service" in text or "nodename" in text or "getaddrinfo" in text:
        return "the host name does not resolve"
    return type(exc).__name__
