"""Screening an arrival before it is kept: the sender's checks (SPF, DKIM, DMARC, ARC),
Postern's Authentication-Results stamped in, and each recipient's answer from its
inbound policy and allow and block lists (docs/trust.md). Both receive backends'
listeners screen the same way: smtp_local before it stores, the WildDuck front door
before it hands the message to WildDuck."""

from __future__ import annotations

import asyncio
import dataclasses
import functools
import logging
from concurrent.futures import ThreadPoolExecutor

from postern.core.mail import policy, rules, verdicts
from postern.core.smtp.session import Arrival

log = logging.getLogger("postern.smtp")

TEMPORARY = "451 4.3.0 Temporary failure storing the message, try again later"


@dataclasses.dataclass(frozen=True)
class Screened:
    #: The arrival with Postern's Authentication-Results in its raw bytes and headers.
    arrival: Arrival
    #: The verdict as stored on the message (JSON).
    authentication: str
    #: Recipient address (lower case) -> the policy's and lists' answer.
    answers: dict
    #: The reply to DATA when the message is refused for every recipient, else None.
    refusal: str | None = None

    @property
    def held(self) -> dict[str, str]:
        """Recipients whose copy is quarantined, with the reason."""
        return policy.held(self.answers)


async def screen(postern, arrival: Arrival, *, note: str = "") -> Screened:
    """Check the sender and judge every recipient. ``note`` goes into the stamped
    header as a comment (the front door names the verdict it recorded)."""
    arrival, verdict, authentication = await check_sender(postern, arrival, note=note)
    sender = verdicts.single_from(arrival.parsed)
    identity = rules.identity_of(verdict, sender, arrival.mail_from)
    claims = [a for a in (sender, arrival.mail_from) if "@" in a]
    try:
        answers = await arrival.runner.run(policy.decisions, postern.config, verdict, arrival.inboxes, identity, claims)
    except Exception:  # the policy could not be read: the sender keeps the message
        log.exception("could not read the policy or lists for mail from %s; answered 451", arrival.mail_from)
        return Screened(arrival, authentication, {}, TEMPORARY)
    refusal = policy.refusal(answers)
    if refusal:
        log.info("refused a message from %s by inbound policy: %s", arrival.mail_from, refusal)
    return Screened(arrival, authentication, answers, refusal)


#: Threads that check senders, apart from the database threads: a check mostly waits on
#: DNS, and on the database threads that wait held up every other message's storing.
#: Many, since a sender whose DNS never answers holds one for ``[trust] dns_timeout``.
CHECK_THREADS = 32


@functools.cache
def _checkers() -> ThreadPoolExecutor:
    """This process's pool, made at first use (so after the listener's fork)."""
    return ThreadPoolExecutor(CHECK_THREADS, thread_name_prefix="postern-verify")


async def check_sender(postern, arrival: Arrival, *, note: str = ""):
    """SPF, DKIM, DMARC and ARC on the thread pool, before the message is kept, so no
    waiter sees it without its verdict. Bounded: a slow DNS gives temperror verdicts at
    ``[trust] dns_timeout`` (each lookup stops there; the wait here is a backstop).
    Returns the arrival stamped with Authentication-Results, the verdict and its JSON."""
    trust = postern.config.trust
    authserv_id = verdicts.authserv_id_for(postern)
    check = functools.partial(
        verdicts.verify,
        arrival.raw,
        arrival.parsed,
        arrival.mail_from,
        arrival.client_ip,
        arrival.helo,
        resolver=trust.resolver,
        timeout=trust.dns_timeout,
    )
    try:
        loop = asyncio.get_running_loop()
        verdict = await asyncio.wait_for(loop.run_in_executor(_checkers(), check), trust.dns_timeout + 1)
    except TimeoutError:
        sender = arrival.parsed.sender.address if arrival.parsed.sender else ""
        verdict = verdicts.timed_out(sender)
    done = await arrival.runner.run(
        verdicts.checked, arrival.raw, arrival.parsed, verdict, arrival.mail_from, arrival.helo, authserv_id, note
    )
    return dataclasses.replace(arrival, raw=done.raw, parsed=done.parsed), verdict, done.authentication
