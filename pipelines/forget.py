"""``chatlake forget``: one erasure across every layer that holds a copy of the text.

The lake erases what it owns (``lake.forget``: the event table and its old files, the spool, the quarantine,
the caches); the copies above it are removed by the parts listed in ``SCRUBS``, each handed the same
``Erasure``: the model versions trained on a snapshot that held an erased conversation are marked in the
registry first (``erased_by`` in ``model_versions``: the weights learned from text that is gone, and the
watcher retrains when one is in production), then snapshots are rewritten without the conversations (after any cut in progress publishes) and so
are the exports made from them under the home, the proxy's retry spool is scrubbed of lines naming them, the
watcher's kept inbox files holding their text are deleted. A part that fails fails the erasure with its
error, and the erasure stays pending: ``resume`` (run at every start of the ``chatlake`` command) completes it.
"""

from __future__ import annotations

from pathlib import Path

from lake.forget import Erasure, ForgetReport
from lake.forget import forget as forget_in_lake
from lake.forget import resume as resume_in_lake
from lake.home import Home
from lake.quarantine import scrub
from pipelines.snapshot import erase_conversations, erase_exports, snapshots_holding, wait_for_cuts
from registry.models import mark_erased
from pipelines.watch.inbox import erase_originals


def mark_models(home: Home, erasure: Erasure) -> int:
    """Mark the model versions trained on a snapshot holding erased conversations (before the snapshots are
    rewritten: afterwards they no longer say which held them)."""
    if erasure.conversations and home.snapshots_dir.exists():
        wait_for_cuts(home)
        mark_erased(home, snapshots_holding(home, erasure.conversations), erasure.erasure_id, who="forget",
                    why="an erasure removed conversations from its snapshot")
    return 0


def erase_snapshots(home: Home, erasure: Erasure) -> int:
    """Rewrite the snapshots holding the erased conversations, those being cut now included, and the exports
    made from them under the home."""
    if not home.snapshots_dir.exists():
        return 0
    if erasure.conversations:
        wait_for_cuts(home)
        erase_conversations(home, erasure.conversations)
    return erase_exports(home)


def scrub_proxy_retry_spool(home: Home, erasure: Erasure) -> int:
    """Drop the events naming the erased conversations or user that the proxy could not write yet."""
    scrub(home.proxy_retry_dir, erasure.needles)
    return 0


def erase_inbox_originals(home: Home, erasure: Erasure) -> int:
    """Delete the imported inbox files that hold erased text."""
    return erase_originals(home, erasure.probes)


SCRUBS = (mark_models, erase_snapshots, scrub_proxy_retry_spool, erase_inbox_originals)


def forget(home: Home | str | Path | None = None, *, conversation_id: str | None = None,
           user_id: str | None = None, reason: str | None = None) -> ForgetReport:
    """Erase a conversation, or every conversation of a user, everywhere under the home."""
    return forget_in_lake(home, conversation_id=conversation_id, user_id=user_id, reason=reason, scrubs=SCRUBS)


def resume(home: Home | str | Path | None = None) -> list[ForgetReport]:
    """Complete the erasures an interrupted ``forget`` left pending (every start of ``chatlake`` runs this)."""
    return resume_in_lake(home, scrubs=SCRUBS)
