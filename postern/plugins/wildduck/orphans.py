"""WildDuck users whose inbox rolled back after they were made: the receiver records
them (``WildDuckOrphan``) when WildDuck cannot delete them at once, and the watcher's
sweep deletes them later."""

from __future__ import annotations

import logging

from postern.core.backends import BackendError
from postern.core.db import write_transaction
from postern.plugins.wildduck.models import WildDuckMailbox, WildDuckOrphan

log = logging.getLogger("postern.wildduck")


def delete_orphans(api) -> int:
    """Delete the users of rolled-back inboxes that WildDuck could not delete then;
    returns how many went. Called by the watcher's sweep."""
    deleted = 0
    for orphan in list(WildDuckOrphan.select()):
        if WildDuckMailbox.get_or_none(WildDuckMailbox.user_id == orphan.user_id) is not None:
            pass  # adopted by a provisioning since: not ours to delete
        else:
            try:
                api.delete_user(orphan.user_id)
            except BackendError as exc:
                log.info("orphaned WildDuck user %s not deleted yet: %s", orphan.user_id, exc)
                continue
            deleted += 1
        with write_transaction():
            WildDuckOrphan.delete().where(WildDuckOrphan.user_id == orphan.user_id).execute()
    return deleted
