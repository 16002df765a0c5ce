"""``acs``: the send backend for Azure Communication Services email. While it is the
active send backend the core publishes what ACS needs for a custom domain: its SPF
include, CNAMEs to its DKIM keys and its ownership TXT (``AcsSender.spf_mechanisms``,
``dkim_records``, ``dns_records``). The Azure SDK is imported only when the backend
is built."""

from postern.core.hookspecs import hookimpl
from postern.plugins.acs.sender import AcsSender


@hookimpl
def postern_register_backends(register):
    register("send", AcsSender.name, AcsSender)
