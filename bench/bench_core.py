"""Per-operation costs of the cryptographic core, as ratios to baselines from the same run.

Run: ``.venv/bin/python bench/bench_core.py [--quick] [--write bench/RESULTS.md]``

Each operation is timed ``ROUNDS`` times over a batch sized to take ~50 ms;
the median per-operation time is reported, next to the baseline it should be
compared with (the raw primitive underneath, or a reference library doing the
same job). Ratios, not absolute times, are what to watch between machines:
both sides of each ratio ran in the same process, minutes apart.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import rfc8785
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from keys import jose, strictjson
from keys.httpsig import HttpRequest, SignaturePolicy, content_digest, sign, verify
from keys.keyset import KeySet, PrivateKeySet
from keys.material import ENCRYPTION_ALG, PrivateKey
from protocol.canonical import canonical_json
from protocol.capsule import open_capsule_at, seal_capsule_at
from protocol.chain import EMPTY, verify_links
from protocol.directory import KeyDirectory
from protocol.transcript import TranscriptEntry

ROUNDS = 7


@dataclass
class Row:
    group: str
    name: str
    us: float
    baseline: str
    baseline_us: float

    @property
    def ratio(self) -> float:
        return self.us / self.baseline_us


def measure(fn: Callable[[], object], rounds: int = ROUNDS, target_s: float = 0.05) -> float:
    """Median microseconds per call."""
    fn()
    start = time.perf_counter()
    fn()
    once = max(time.perf_counter() - start, 1e-7)
    batch = max(1, int(target_s / once))
    samples = []
    for _ in range(rounds):
        start = time.perf_counter()
        for _ in range(batch):
            fn()
        samples.append((time.perf_counter() - start) / batch * 1e6)
    return statistics.median(samples)


def json_message(size: int) -> dict[str, object]:
    """A JSON-RPC ``tools/call`` with nested arguments, about ``size`` bytes."""
    message: dict[str, object] = {"jsonrpc": "2.0", "id": 7, "method": "tools/call"}
    arguments: dict[str, object] = {}
    message["params"] = {"name": "refund.create", "arguments": arguments}
    i = 0
    while len(json.dumps(message)) < size:
        arguments[f"item{i:05d}"] = {
            "text": "Kundin möchte Rückerstattung \u2028 für Bestellung",
            "amount": i,
            "tags": ["refund", "eu", i % 3 == 0, None],
            "meta": {"z": i, "a": [{"q": "r"}]},
        }
        i += 1
    return message


def run(quick: bool) -> list[Row]:
    rows: list[Row] = []
    rounds = 3 if quick else ROUNDS

    def add(group: str, name: str, fn: Callable[[], object], base: str, base_us: float) -> None:
        rows.append(Row(group, name, measure(fn, rounds), base, base_us))

    message = b"x" * 300
    ed = PrivateKey.generate("Ed25519")
    es = PrivateKey.generate("ES256")
    keys = KeySet([ed.public, es.public])
    raw = {}
    for key in (ed, es):
        sig = key.sign(message)
        raw[key.alg, "sign"] = measure(lambda k=key: k.sign(message), rounds)
        raw[key.alg, "verify"] = measure(lambda k=key, s=sig: k.public.verify(s, message), rounds)
        rows.append(Row("primitive", f"{key.alg} sign (raw)", raw[key.alg, "sign"], "-", 1))
        rows.append(Row("primitive", f"{key.alg} verify (raw)", raw[key.alg, "verify"], "-", 1))

    payload = json.dumps(json_message(4096)).encode()
    for key in (ed, es):
        token = jose.sign_compact(payload, key, typ="bench+jws")
        add(
            "JWS",
            f"{key.alg} sign compact, 4 KiB",
            lambda k=key: jose.sign_compact(payload, k, typ="bench+jws"),
            f"raw {key.alg} sign",
            raw[key.alg, "sign"],
        )
        add(
            "JWS",
            f"{key.alg} verify compact, 4 KiB",
            lambda t=token: jose.verify_compact(t, keys, typ="bench+jws"),
            f"raw {key.alg} verify",
            raw[key.alg, "verify"],
        )

    # RFC 9421 request signatures: ours vs raw primitive vs the maintained library.
    body = payload
    url = "https://gateway.example:8443/mcp/payments"
    headers = [
        ("content-type", "application/json"),
        ("mcp-method", "tools/call"),
        ("mcp-name", "refund.create"),
        ("content-digest", content_digest(body)),
    ]
    components = (
        "@method",
        "@target-uri",
        "@authority",
        "content-digest",
        "mcp-method",
        "mcp-name",
    )
    policy = SignaturePolicy(required_components=frozenset(components))
    unsigned = HttpRequest("POST", url, headers)
    now = int(time.time())
    for key in (ed, es):
        si, sv = sign(unsigned, key, components=components, created=now, nonce="n" * 22)
        signed = HttpRequest("POST", url, [*headers, ("signature-input", si), ("signature", sv)])
        add(
            "RFC 9421",
            f"{key.alg} sign request (6 components)",
            lambda k=key: sign(unsigned, k, components=components, created=now, nonce="n" * 22),
            f"raw {key.alg} sign",
            raw[key.alg, "sign"],
        )
        add(
            "RFC 9421",
            f"{key.alg} verify request + 4 KiB digest",
            lambda r=signed: verify(r, keys, policy, body=body),
            f"raw {key.alg} verify",
            raw[key.alg, "verify"],
        )
    library = _library_httpsig(ed, url, headers, body, components)
    if library:
        ours_sign = next(r.us for r in rows if r.name.startswith("Ed25519 sign request"))
        ours_verify = next(r.us for r in rows if r.name.startswith("Ed25519 verify request"))
        lib_sign, lib_verify = (measure(f, rounds) for f in library)
        rows.append(
            Row(
                "RFC 9421",
                "Ed25519 sign: ours vs http-message-signatures",
                ours_sign,
                "library sign",
                lib_sign,
            )
        )
        rows.append(
            Row(
                "RFC 9421",
                "Ed25519 verify: ours vs http-message-signatures",
                ours_verify,
                "library verify",
                lib_verify,
            )
        )

    # JWE and capsules, against raw ECDH + AES-GCM.
    peer = ec.generate_private_key(ec.SECP256R1()).public_key()
    local = ec.generate_private_key(ec.SECP256R1())
    aes = AESGCM(os.urandom(32))
    nonce = os.urandom(12)
    raw_ecdh = measure(lambda: local.exchange(ec.ECDH(), peer), rounds)
    raw_gcm = measure(lambda: aes.encrypt(nonce, payload, None), rounds)
    rows.append(Row("primitive", "P-256 ECDH (raw)", raw_ecdh, "-", 1))
    rows.append(Row("primitive", "AES-256-GCM 4 KiB (raw)", raw_gcm, "-", 1))
    recipients = [PrivateKeySet.generate(ENCRYPTION_ALG) for _ in range(3)]
    jwe1 = jose.encrypt_general(payload, [recipients[0].active.public], typ="bench")
    add(
        "JWE",
        "encrypt 4 KiB to 1 recipient",
        lambda: jose.encrypt_general(payload, [recipients[0].active.public], typ="bench"),
        "raw ECDH x2 + GCM",
        2 * raw_ecdh + raw_gcm,
    )
    add(
        "JWE",
        "encrypt 4 KiB to 3 recipients",
        lambda: jose.encrypt_general(payload, [r.active.public for r in recipients], typ="bench"),
        "raw ECDH x6 + GCM",
        6 * raw_ecdh + raw_gcm,
    )
    add(
        "JWE",
        "decrypt 4 KiB",
        lambda: jose.decrypt(jwe1, recipients[0].active, typ="bench"),
        "raw ECDH + GCM",
        raw_ecdh + raw_gcm,
    )

    sender = "spiffe://baton.local/agent/support"
    to = {f"spiffe://baton.local/agent/r{i}": r.public() for i, r in enumerate(recipients)}
    directory = KeyDirectory({sender: KeySet([ed.public])})
    content = json_message(4096)
    capsule = seal_capsule_at(
        content,
        sender=sender,
        signing_key=ed,
        recipients=dict(list(to.items())[:1]),
        conversation="c",
        now=now,
    )
    seal_base = raw["Ed25519", "sign"] + 2 * raw_ecdh + raw_gcm
    add(
        "capsule",
        "seal 4 KiB to 1 recipient",
        lambda: seal_capsule_at(
            content,
            sender=sender,
            signing_key=ed,
            recipients=dict(list(to.items())[:1]),
            conversation="c",
            now=now,
        ),
        "raw sign + 2 ECDH + GCM",
        seal_base,
    )
    add(
        "capsule",
        "seal 4 KiB to 3 recipients",
        lambda: seal_capsule_at(
            content, sender=sender, signing_key=ed, recipients=to, conversation="c", now=now
        ),
        "raw sign + 6 ECDH + GCM",
        raw["Ed25519", "sign"] + 6 * raw_ecdh + raw_gcm,
    )
    me = next(iter(to))
    add(
        "capsule",
        "open 4 KiB",
        lambda: open_capsule_at(
            capsule, me=me, my_keys=recipients[0], senders=directory, now=now, conversation="c"
        ),
        "raw verify + ECDH + GCM",
        raw["Ed25519", "verify"] + raw_ecdh + raw_gcm,
    )

    # Canonical JSON and strict parsing, against the reference and the stdlib.
    for size, label in ((4096, "4 KiB"), (262144, "256 KiB")):
        value = json_message(size)
        text = json.dumps(value).encode()
        stdlib = measure(
            lambda v=value: json.dumps(
                v, sort_keys=True, separators=(",", ":"), ensure_ascii=False
            ),
            rounds,
        )
        add(
            "JSON",
            f"canonical_json {label}",
            lambda v=value: canonical_json(v),
            "rfc8785 (reference)",
            measure(lambda v=value: rfc8785.dumps(v), rounds),
        )
        rows.append(
            Row(
                "JSON",
                f"canonical_json {label} vs sorted json.dumps",
                rows[-1].us,
                "json.dumps sorted",
                stdlib,
            )
        )
        add(
            "JSON",
            f"strictjson.loads {label}",
            lambda t=text: strictjson.loads(t),
            "json.loads",
            measure(lambda t=text: json.loads(t), rounds),
        )

    # Transcript chain.
    fields = {
        "conversation": "c",
        "ts": 1,
        "sender": sender,
        "to": me,
        "protocol": "a2a",
        "kind": "request",
        "method": "SendMessage",
        "rpc_id": 1,
        "body_digest": "sha256:" + "a" * 64,
        "signer": ed.kid,
        "verified": True,
    }
    entry = TranscriptEntry.create(EMPTY, **fields)
    entry_bytes = entry.canonical()
    sha = measure(lambda: hashlib.sha256(entry_bytes).digest(), rounds)
    add(
        "transcript",
        "create entry (validate + JCS + SHA-256)",
        lambda: TranscriptEntry.create(entry.head, **fields),
        "SHA-256 of the entry",
        sha,
    )
    add("transcript", "verify one link", lambda: verify_links([entry]), "SHA-256 of the entry", sha)
    return rows


def _library_httpsig(
    key: PrivateKey,
    url: str,
    headers: list[tuple[str, str]],
    body: bytes,
    components: tuple[str, ...],
) -> tuple[Callable[[], object], Callable[[], object]] | None:
    try:
        import http_message_signatures as hms
    except ImportError:
        return None

    class Resolver(hms.HTTPSignatureKeyResolver):
        def resolve_public_key(self, key_id: str) -> object:
            return key.public.crypto_key

        def resolve_private_key(self, key_id: str) -> object:
            return key.crypto_key

    class Verifier(hms.HTTPMessageVerifier):
        def validate_created_and_expires(self, *args: object, **kwargs: object) -> None:
            return None

    class Message:
        def __init__(self) -> None:
            self.method = "POST"
            self.url = url
            self.headers = dict(headers)

    signer = hms.HTTPMessageSigner(
        signature_algorithm=hms.algorithms.ED25519, key_resolver=Resolver()
    )
    verifier = Verifier(signature_algorithm=hms.algorithms.ED25519, key_resolver=Resolver())
    signed = Message()
    signer.sign(
        signed,
        key_id=key.kid,
        nonce="n" * 22,
        covered_component_ids=components,
        body=body,
        use_existing_digest=True,
    )

    def lib_sign() -> object:
        return signer.sign(
            Message(),
            key_id=key.kid,
            nonce="n" * 22,
            covered_component_ids=components,
            body=body,
            use_existing_digest=True,
        )

    def lib_verify() -> object:
        return verifier.verify(signed, max_age=None, require_components=components, body=body)

    return lib_sign, lib_verify


def render(rows: list[Row]) -> str:
    lines = [
        f"Machine: {platform.machine()}, {os.cpu_count()} CPUs, "
        f"Python {platform.python_version()}, {platform.platform()}. "
        f"Median of {ROUNDS} rounds, one core.",
        "",
        "| group | operation | median | baseline (same run) | baseline | ratio |",
        "|---|---|---:|---|---:|---:|",
    ]
    for r in rows:
        if r.baseline == "-":
            lines.append(f"| {r.group} | {r.name} | {r.us:.1f} us | - | - | - |")
        else:
            lines.append(
                f"| {r.group} | {r.name} | {r.us:.1f} us | {r.baseline} "
                f"| {r.baseline_us:.1f} us | {r.ratio:.2f} |"
            )
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="3 rounds instead of 7")
    parser.add_argument("--write", type=Path, help="also write the table to this Markdown file")
    args = parser.parse_args()
    table = render(run(args.quick))
    print(table)
    if args.write:
        marker = "<!-- results -->"
        text = args.write.read_text() if args.write.exists() else marker + "\n"
        head = text.split(marker)[0]
        args.write.write_text(head + marker + "\n\n" + table)


if __name__ == "__main__":
    main()
