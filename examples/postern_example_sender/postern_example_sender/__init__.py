"""The plugin module: Postern calls its hooks. It registers one send backend."""

from postern.core.hookspecs import hookimpl
from postern_example_sender.sender import DropFolderSender


@hookimpl
def postern_register_backends(register):
    register("send", DropFolderSender.name, DropFolderSender)
