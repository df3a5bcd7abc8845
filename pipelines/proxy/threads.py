"""Conversation threading for the proxy: which logged conversation a request continues.

Chat clients keep no conversation id; they resend the whole conversation with every request. The rule:

1. A request with the header ``X-Chatlake-Conversation: ID`` belongs to conversation ID. If its messages
   begin with what is logged of ID, only the messages after that are new; otherwise all of them are
   appended after what is logged (a client that sends only its newest message still builds one thread).
2. Without the header, a request whose messages begin with the whole transcript of a logged conversation
   (every message, the replies included, compared by ``Message.key``: role, text, tool calls with their
   arguments, the call a tool result answers, attachments) continues it: the messages after the
   transcript and the reply become its next turns. The longest matching transcript wins; between identical
   transcripts, the conversation that reached it last.
3. Otherwise the request starts a new conversation.

A reply that failed upstream or was cut short is logged but does not join the transcript, so retrying the
same request continues the same conversation and the new reply takes the same turn (the same message id: the
``messages`` view shows the retry). A request that adds nothing to the transcript logs its last message again
in place (same id) so the exchange is on record. Regenerating a reply or editing an earlier message does not
begin with the transcript, so it starts a new conversation; the lake keeps both.

The index holds one hash per conversation, the chained hash of its transcript (nothing of the text), is
updated in memory by the proxy's event loop, and is rebuilt from the lake's ``messages`` view when the
proxy starts, so threading survives a restart and continues conversations that came from anywhere.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Sequence

from lake.connect import connect
from lake.home import Home
from pipelines.proxy.protocol import Message
from schemas.ids import new_id

EMPTY = b""


def chain(previous: bytes, message: Message) -> bytes:
    """The hash of a transcript extended by one message (a key is one JSON array, so no ambiguity)."""
    return hashlib.blake2b(previous + message.key(), digest_size=16).digest()


@dataclass(frozen=True)
class Thread:
    """Where a request's messages go: ``messages[skip:]`` are logged from turn ``first_turn`` on."""

    conversation_id: str
    skip: int
    first_turn: int
    base: bytes  # hash of the transcript before messages[skip]

    def reply_turn(self, n_messages: int) -> int:
        return self.first_turn + n_messages - self.skip

    def message_id(self, n_messages: int) -> str:
        """The id the reply will be logged under (the lake's default: '<conversation_id>/<turn_index>')."""
        return f"{self.conversation_id}/{self.reply_turn(n_messages)}"


class ThreadIndex:
    """Transcript hash → conversations at that point, and each conversation's (hash, next turn)."""

    def __init__(self) -> None:
        self._at: dict[bytes, dict[str, None]] = {}  # insertion-ordered set: the latest conversation last
        self._heads: dict[str, tuple[bytes, int]] = {}

    def __len__(self) -> int:
        return len(self._heads)

    @classmethod
    def from_lake(cls, home: Home) -> "ThreadIndex":
        """Rebuild from the lake: each conversation's messages in turn order, replies cut short left out."""
        index = cls()
        con = connect(home)
        try:
            rows = con.execute("""
                SELECT conversation_id,
                       list({'role': role, 'content': content, 'tool_calls': tool_calls,
                             'tool_call_id': tool_call_id, 'tool_name': tool_name, 'attachments': attachments}
                            ORDER BY turn_index),
                       max(turn_index) + 1
                FROM messages
                WHERE coalesce(json_extract_string(metadata, '$.incomplete'), 'false') <> 'true'
                GROUP BY conversation_id
                ORDER BY max(occurred_at)
            """).fetchall()
        finally:
            con.close()
        for conversation_id, messages, next_turn in rows:
            digest = EMPTY
            for fields in messages:
                digest = chain(digest, Message.of(fields))
            index._move(conversation_id, digest, next_turn)
        return index

    def resolve(self, messages: Sequence[Message], conversation_id: str | None = None) -> Thread:
        """Apply the rule above to a request's (non-empty) messages."""
        prefix = [EMPTY]
        for message in messages:
            prefix.append(chain(prefix[-1], message))
        if conversation_id is not None:
            head = self._heads.get(conversation_id)
            if head is None:
                return Thread(conversation_id, 0, 0, EMPTY)
            digest, next_turn = head
            k = next((k for k in range(len(messages), 0, -1) if prefix[k] == digest), None)
            if k is None:
                return Thread(conversation_id, 0, next_turn, digest)
            return self._continue(conversation_id, k, prefix, next_turn)
        for k in range(len(messages), 0, -1):
            found = self._at.get(prefix[k])
            if found:
                conversation = next(reversed(found))
                return self._continue(conversation, k, prefix, self._heads[conversation][1])
        return Thread(new_id(), 0, 0, EMPTY)

    @staticmethod
    def _continue(conversation_id: str, k: int, prefix: list[bytes], next_turn: int) -> Thread:
        if k == len(prefix) - 1:  # nothing new: the last message is logged again, in place
            return Thread(conversation_id, k - 1, next_turn - 1, prefix[k - 1])
        return Thread(conversation_id, k, next_turn, prefix[k])

    def advance(self, thread: Thread, messages: Sequence[Message], reply: Message | None) -> None:
        """Record the transcript after an exchange: the new messages, and the reply if it is complete."""
        digest = thread.base
        for message in messages[thread.skip:]:
            digest = chain(digest, message)
        next_turn = thread.reply_turn(len(messages))
        if reply is not None:
            digest = chain(digest, reply)
            next_turn += 1
        self._move(thread.conversation_id, digest, next_turn)

    def _move(self, conversation_id: str, digest: bytes, next_turn: int) -> None:
        old = self._heads.get(conversation_id)
        if old is not None:
            at = self._at.get(old[0])
            if at is not None:
                at.pop(conversation_id, None)
                if not at:
                    del self._at[old[0]]
        self._heads[conversation_id] = (digest, next_turn)
        self._at.setdefault(digest, {})[conversation_id] = None
