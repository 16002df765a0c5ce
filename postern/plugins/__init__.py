"""Plugins that ship with Postern, each declared in the ``postern`` entry-point group."""
