"""Transcripts: what crossed the gateway, in order, per conversation.

Every request, response and stream event the gateway passes is one
:class:`TranscriptEntry` in its conversation's hash chain (see
``protocol/chain.py``). An entry records *who* sent *what* to *whom* and how
the gateway authenticated it; the body itself is stored separately, encrypted
at rest, and the entry holds its digest (the exact bytes that travelled, not a
re-serialisation).

A conversation is the A2A ``contextId``, the MCP session, a
``Baton-Conversation`` header for stateless MCP, or an id the gateway assigns.

The gateway signs checkpoints ``{conversation, seq, head}`` (JWS, ``typ``
``baton-checkpoint+jws``); a transcript verifies offline against its latest
checkpoint with :func:`verify_transcript`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import ClassVar, Final, Literal

from pydantic import Field

from keys.jose import sign_compact, verify_compact
from keys.keyset import KeySet
from keys.material import PrivateKey
from protocol.chain import EMPTY, ChainedRecord, ChainHead, verify_links
from protocol.errors import BindingMismatch, translating
from protocol.model import BatonModel, Digest, Identity, ShortText

__all__ = [
    "CHECKPOINT_TYP",
    "Checkpoint",
    "ConversationId",
    "EntryKind",
    "Protocol",
    "TranscriptEntry",
    "sign_checkpoint",
    "verify_checkpoint",
    "verify_transcript",
]

CHECKPOINT_TYP: Final = "baton-checkpoint+jws"

Protocol = Literal["mcp", "a2a", "jsonrpc", "http", "baton"]
EntryKind = Literal["request", "response", "stream_event", "notification", "error", "handoff"]
ConversationId = ShortText


class TranscriptEntry(ChainedRecord):
    """One message that crossed the gateway.

    ``sender`` (``from`` on the wire) and ``to`` are identities; ``signer`` is
    the ``keyid`` whose signature the gateway verified (``verified`` true), or
    ``None`` for an agent allowed to send unsigned (``verified`` false: the
    gateway attests by mTLS/JWT alone). ``ts`` is Unix time in milliseconds.
    """

    chain_key: ClassVar[str | None] = "conversation"

    v: Literal[1] = 1
    conversation: ConversationId = Field(min_length=1)
    ts: int = Field(ge=0)
    sender: Identity = Field(alias="from")
    to: Identity
    protocol: Protocol
    kind: EntryKind
    method: ShortText | None = None
    rpc_id: ShortText | int | None = None
    status: int | None = Field(default=None, ge=100, le=599)
    body_digest: Digest | None = None
    body_size: int | None = Field(default=None, ge=0)
    signer: ShortText | None = None
    verified: bool


class Checkpoint(BatonModel):
    """Signed statement: ``conversation`` has ``seq + 1`` entries and ends in ``head``."""

    conversation: ConversationId
    seq: int = Field(ge=-1)
    head: Digest
    ts: int = Field(ge=0)

    @property
    def chain_head(self) -> ChainHead:
        return ChainHead(self.seq, self.head)


def sign_checkpoint(conversation: str, head: ChainHead, key: PrivateKey, *, ts: int) -> str:
    """JWS over the canonical checkpoint, by the gateway key."""
    checkpoint = Checkpoint(conversation=conversation, seq=head.seq, head=head.hash, ts=ts)
    with translating():
        return sign_compact(checkpoint.canonical(), key, typ=CHECKPOINT_TYP)


def verify_checkpoint(token: str, gateway_keys: KeySet) -> Checkpoint:
    """Verify a checkpoint's signature and parse it."""
    with translating():
        verified = verify_compact(token, gateway_keys, typ=CHECKPOINT_TYP)
    return Checkpoint.parse(verified.payload)


def verify_transcript(
    entries: Sequence[TranscriptEntry],
    *,
    conversation: str,
    checkpoint: Checkpoint | None = None,
) -> ChainHead:
    """Verify a whole transcript from its first entry; if a checkpoint is
    given, the transcript must end exactly at it (truncation, H03)."""
    if checkpoint is not None and checkpoint.conversation != conversation:
        raise BindingMismatch("checkpoint is for another conversation")
    return verify_links(
        entries,
        start=EMPTY,
        scope=conversation,
        expected_head=checkpoint.chain_head if checkpoint else None,
    )
