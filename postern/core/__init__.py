"""Postern's core: domain, hook specs, plugin manager, config and storage.

The core knows no transport and no vendor SDK; backends reach it through hooks.
"""
