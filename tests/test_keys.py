"""Key format: prefix, entropy, checksum; only hashes stored; constant-time comparison."""

import pytest

from postern.core import keys


@pytest.mark.parametrize("kind", keys.KINDS)
def test_minted_keys_have_prefix_checksum_and_hash(kind):
    minted = keys.mint(kind)
    assert minted.plaintext.startswith(f"pk_{kind}_")
    assert len(minted.plaintext) == len(f"pk_{kind}_") + keys.BODY_LENGTH + keys.CHECKSUM_LENGTH
    assert keys.parse_kind(minted.plaintext) == kind
    assert minted.prefix == minted.plaintext[: len(f"pk_{kind}_") + 8]
    assert minted.hash == keys.hash_key(minted.plaintext) and len(minted.hash) == 64
    assert minted.plaintext not in minted.hash
    assert keys.matches(minted.plaintext, minted.hash)
    assert not keys.matches(minted.plaintext + "x", minted.hash)


def test_keys_are_unique_and_high_entropy():
    bodies = {keys.mint("agent").plaintext for _ in range(2000)}
    assert len(bodies) == 2000
    # 43 base62 characters carry 256 bits; check every position varies.
    sample = [k[len("pk_agent_") : len("pk_agent_") + keys.BODY_LENGTH] for k in bodies]
    assert all(len({s[i] for s in sample}) > 20 for i in range(1, keys.BODY_LENGTH))


@pytest.mark.parametrize(
    "mangle",
    [
        lambda k: k[:-1] + ("A" if k[-1] != "A" else "B"),  # checksum typo
        lambda k: k[:12] + ("x" if k[12] != "x" else "y") + k[13:],  # body typo
        lambda k: k[:-3],  # truncated
        lambda k: k.replace("pk_agent_", "pk_agnet_"),
        lambda k: k.replace("pk_agent_", "sk_agent_"),
        lambda k: k + "=",
        lambda k: "",
        lambda k: "pk_agent_",
        lambda k: "pk_agent_" + "!" * 49,
    ],
)
def test_malformed_keys_are_rejected_without_a_lookup(mangle):
    with pytest.raises(keys.MalformedKey):
        keys.parse_kind(mangle(keys.mint("agent").plaintext))


def test_with_checksum_makes_well_formed_keys_from_a_chosen_body_and_refuses_bad_bodies():
    body = ("MockAgentKey" + "0" * keys.BODY_LENGTH)[: keys.BODY_LENGTH]
    key = keys.with_checksum("agent", body)
    assert key.startswith(f"pk_agent_{body}") and keys.parse_kind(key) == "agent"
    with pytest.raises(keys.MalformedKey):
        keys.parse_kind(key[:-1] + ("A" if key[-1] != "A" else "B"))  # the checksum is real
    for kind, bad in (("agent", body[:-1]), ("agent", body[:-1] + "-"), ("root", body)):
        with pytest.raises(ValueError):
            keys.with_checksum(kind, bad)
