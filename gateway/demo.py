"""``baton demo``: one agent-to-agent hop, end to end, on the dev data folder.

No network: the demo plays the agent, the gateway and the receiving agent in
one process, using exactly the functions the data plane uses, the SQLite
nonce store under ``.baton/baton.db`` and a transcript kept as canonical JSON
lines in ``.baton/demo-transcript.jsonl`` (verified from its first entry on
every run). It then replays, tampers and misdelivers, and shows each attack
refused with its stable error code.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TextIO

from gateway.config import load as load_config
from gateway.devdata import AgentMaterial, DataFolder
from gateway.stores.sqlite import SqliteNonceStore, connect
from keys.b64 import b64url_encode
from keys.httpsig import HttpRequest, SignaturePolicy, content_digest, sign, verify
from keys.x509 import peer_identity, pem_chain_to_der
from protocol.canonical import digest
from protocol.capsule import open_capsule_at, seal_capsule_at
from protocol.chain import EMPTY, parse_record
from protocol.directory import KeyDirectory
from protocol.errors import BatonError, IdentityMismatch, translating
from protocol.replay import FreshnessPolicy, check_freshness, claim_nonce
from protocol.transcript import (
    TranscriptEntry,
    sign_checkpoint,
    verify_checkpoint,
    verify_transcript,
)

__all__ = ["run_demo"]

POLICY = SignaturePolicy(
    required_components=frozenset({"@method", "@target-uri", "@authority", "content-digest"}),
)
FRESHNESS = FreshnessPolicy()


@dataclass(frozen=True, slots=True)
class _Hop:
    request: HttpRequest
    body: bytes


class _Printer:
    def __init__(self, out: TextIO) -> None:
        self.out = out
        self.step = 0

    def ok(self, text: str) -> None:
        self.step += 1
        print(f"{self.step:>2}. {text}", file=self.out)

    def refused(self, attack: str, run: Callable[[], object]) -> None:
        try:
            run()
        except BatonError as exc:
            self.ok(f"attack: {attack} -> refused: {exc.code} ({exc.http_status})")
            return
        raise RuntimeError(f"demo attack was NOT refused: {attack}")


def _signed_hop(sender: AgentMaterial, url: str, body: bytes, now: int) -> _Hop:
    headers = [("content-type", "application/json"), ("content-digest", content_digest(body))]
    unsigned = HttpRequest(method="POST", target_uri=url, headers=headers)
    signature_input, signature = sign(
        unsigned,
        sender.signing.active,
        components=("@method", "@target-uri", "@authority", "content-digest"),
        created=now,
        nonce=b64url_encode(secrets.token_bytes(16)),
    )
    signed = [*headers, ("signature-input", signature_input), ("signature", signature)]
    return _Hop(HttpRequest(method="POST", target_uri=url, headers=signed), body)


def _read_transcript(path: Path) -> list[TranscriptEntry]:
    if not path.exists():
        return []
    return [
        parse_record(TranscriptEntry, line.encode())
        for line in path.read_text(encoding="utf-8").splitlines()
    ]


def run_demo(root: Path, out: TextIO) -> None:
    """Run the demo against the data folder at ``root``; raise on any failure."""
    folder = DataFolder(root)
    config = load_config(folder.config)
    td = config.trust_domain
    support = folder.load_agent(td, "support")
    billing = folder.load_agent(td, "billing")
    gateway = folder.load_gateway(td, config.gateway.name)
    anchors = folder.trust_anchors()
    directory = KeyDirectory(
        {support.identity: support.public_keys(), billing.identity: billing.public_keys()}
    )
    nonces = SqliteNonceStore(connect(root / config.store.path))
    transcript_path = folder.data / "demo-transcript.jsonl"
    now = int(time.time())
    p = _Printer(out)
    print(f"Baton demo: trust domain {td}, data folder {folder.data}", file=out)

    # 1. The gateway authenticates the caller's TLS certificate.
    with translating():
        peer = peer_identity(
            pem_chain_to_der(support.cert_pem),
            anchors,
            now=dt.datetime.fromtimestamp(now, dt.UTC),
            usage="client",
            trust_domain=td,
        )
    p.ok(f"TLS client certificate -> {peer.spiffe_id} (chains to the dev CA)")

    # 2. support seals context for billing only, and signs the HTTP request.
    capsule = seal_capsule_at(
        {"order": "A-77", "note": "customer asked for a refund of 120 EUR"},
        sender=support.identity,
        signing_key=support.signing.active,
        recipients={billing.identity: billing.encryption.public()},
        conversation="demo-conversation",
        now=now,
    )
    body = json.dumps(
        {"jsonrpc": "2.0", "id": 1, "method": "SendMessage", "params": {"capsule": capsule}},
        separators=(",", ":"),
    ).encode()
    hop = _signed_hop(support, "https://127.0.0.1:8443/a2a/billing", body, now)
    p.ok(f"support sealed a capsule for billing and signed POST /a2a/billing ({len(body)} bytes)")

    # 3. The gateway verifies signature, digest, freshness; then claims the nonce.
    def gateway_accepts(candidate: _Hop) -> str:
        with translating():
            verified = verify(candidate.request, directory.all_keys, POLICY, body=candidate.body)
        check_freshness(verified.created, verified.expires, now=now, policy=FRESHNESS)
        signer = directory.owner_of(verified.keyid)
        if signer != peer.spiffe_id:
            raise IdentityMismatch("signing key does not belong to the TLS identity")
        asyncio.run(claim_nonce(nonces, verified, now=now, policy=FRESHNESS))
        return verified.keyid

    keyid = gateway_accepts(hop)
    p.ok(f"gateway verified the RFC 9421 signature (key {keyid[:12]}...), digest and freshness")
    p.ok("gateway claimed the nonce in the SQLite store: first use")

    # 4. The gateway records the hop in the conversation's hash chain.
    entries = _read_transcript(transcript_path)
    head = verify_transcript(entries, conversation="demo-conversation") if entries else EMPTY
    entry = TranscriptEntry.create(
        head,
        conversation="demo-conversation",
        ts=now * 1000,
        sender=support.identity,
        to=billing.identity,
        protocol="a2a",
        kind="request",
        method="SendMessage",
        rpc_id=1,
        body_digest=digest(body),
        body_size=len(body),
        signer=keyid,
        verified=True,
    )
    with transcript_path.open("a", encoding="utf-8") as handle:
        handle.write(entry.canonical().decode() + "\n")
    checkpoint = sign_checkpoint(
        "demo-conversation", entry.head, gateway.signing.active, ts=now * 1000
    )
    p.ok(f"transcript entry #{entry.seq} appended, hash {entry.hash[:19]}...; checkpoint signed")

    # 5. billing opens the capsule: only it can.
    opened = open_capsule_at(
        capsule,
        me=billing.identity,
        my_keys=billing.encryption,
        senders=directory,
        now=now,
        conversation="demo-conversation",
        delivered_by=support.identity,
    )
    p.ok(f"billing opened the capsule from {opened.claims.iss}: {json.dumps(opened.payload)}")

    # 6. Attacks.
    p.refused("the same request replayed", lambda: gateway_accepts(hop))
    tampered = _Hop(hop.request, body.replace(b"SendMessage", b"CancelTask!"))
    p.refused("body changed in transit", lambda: gateway_accepts(tampered))
    p.refused(
        "capsule opened by support, who is not a recipient",
        lambda: open_capsule_at(
            capsule, me=support.identity, my_keys=support.encryption, senders=directory, now=now
        ),
    )
    late = now + FRESHNESS.window_s + 1
    p.refused(
        f"request presented {FRESHNESS.window_s + 1}s later",
        lambda: check_freshness(now, None, now=late, policy=FRESHNESS),
    )

    final = verify_transcript(
        _read_transcript(transcript_path),
        conversation="demo-conversation",
        checkpoint=verify_checkpoint(checkpoint, gateway.signing.public()),
    )
    print(
        f"transcript verifies against the signed checkpoint: {final.seq + 1} "
        f"{'entry' if final.seq == 0 else 'entries'}, "
        f"head {final.hash[:19]}... "
        f"({transcript_path})",
        file=out,
    )
