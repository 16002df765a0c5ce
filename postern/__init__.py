"""Postern: self-hosted email inboxes for AI agents."""

__version__ = "0.1.0"
