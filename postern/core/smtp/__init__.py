"""Postern's SMTP listener, shared by every receive backend that takes mail over SMTP.

``options.ListenerOptions`` is what a listener is configured with; ``session`` is one
connection (RCPT checked against the core, DATA parsed within Postern's limits, then
handed to the backend's ``on_message``); ``listener.run_listener`` serves it, in
several forked processes (``prefork``) when asked. smtp_local stores what arrives in
the core; wildduck hands it to WildDuck over LMTP.
"""
