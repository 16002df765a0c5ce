"""What the x402 backend knows about networks without the x402 SDK: the scheme, the test
networks the offline facilitator settles on, the mainnets it names when it refuses one,
and the shape of an EVM address.

Kept apart from ``facilitator`` so that loading the plugin (every Postern process loads
every built-in plugin) does not import ``eth_account`` and ``web3`` through it: ~30 MiB
per process that never bills with x402 (bench/README.md, "Memory").
"""

from __future__ import annotations

import re

SCHEME = "exact"

_ADDRESS = re.compile(r"0x[0-9a-fA-F]{40}")

# Chains whose tokens are worth nothing. A chain not listed is refused even when asked for.
TEST_NETWORKS = {
    "eip155:84532": "Base Sepolia",
    "eip155:11155111": "Ethereum Sepolia",
    "eip155:80002": "Polygon Amoy",
    "eip155:43113": "Avalanche Fuji",
    "eip155:421614": "Arbitrum Sepolia",
    "eip155:11155420": "OP Sepolia",
    "eip155:10143": "Monad testnet",
    "eip155:2201": "Stable testnet",
    "eip155:1328": "Sei testnet",
    "eip155:11124": "Abstract testnet",
    "eip155:31337": "a local Hardhat/Anvil chain",
}
# Named only so that a refusal says which mainnet it was.
MAINNETS = {
    "eip155:1": "Ethereum mainnet",
    "eip155:8453": "Base mainnet",
    "eip155:137": "Polygon PoS mainnet",
    "eip155:43114": "Avalanche C-Chain mainnet",
    "eip155:42161": "Arbitrum One mainnet",
    "eip155:10": "OP mainnet",
    "eip155:143": "Monad mainnet",
    "eip155:988": "Stable mainnet",
    "eip155:4326": "MegaETH mainnet",
    "eip155:1329": "Sei mainnet",
    "eip155:2741": "Abstract mainnet",
}


def network_refusal(network: str) -> str | None:
    """Why the facilitator refuses ``network``, or None for a test network."""
    if network in TEST_NETWORKS:
        return None
    if network in MAINNETS:
        what = f"{network} is {MAINNETS[network]}"
    else:
        what = f"{network} is not a known EVM test network"
    return f"{what}: the offline facilitator moves no money, so it settles on test networks only"
