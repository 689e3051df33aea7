"""Handoff bundles at conversation scale: build + sign + encrypt, and verify.

Run: ``.venv/bin/python bench/bench_handoff.py [--runs N] [--entries N] [--quick] [--write]``

The workload is one recorded conversation of ``--entries`` (default 1,000)
transcript entries between three agents, each with a realistic JSON body of
300-1,000 bytes (A2A ``SendMessage`` requests and task results, MCP
``tools/call`` requests and results), a handoff request with two PII paths
(one of them a ``*`` path over every body), and two operators in the queue.
Transcript entries are parsed from their stored bytes first, as the inbox
reads them from the transcript store (no canonical-bytes memo).

Timed, ``--runs`` times each (default 30), median and p95 in milliseconds:

* **build**: :func:`protocol.bundle.build_bundle` (verifies the chain,
  records and digests every body, masks PII, validates the bundle once,
  serialises each part once for the content digest and the payload, then
  checks the result's integrity over those bytes);
* **seal**: :func:`protocol.bundle.seal_bundle` (Ed25519 JWS of the payload
  serialised while building, JWE to the two operator keys, plus the
  reveal-set JWE);
* **build + seal**: both, what the inbox does per escalation;
* **open**: :func:`protocol.bundle.open_bundle` (decrypt, verify the JWS,
  validate, one JCS pass for the canonical-form check and every digest, which
  lets the strict JSON parse be skipped for a canonical payload (its depth
  check still runs), then integrity: chain, content and body digests, agent
  views, masked paths);
* **verify export**: :func:`gateway.verify.verify_artifact` on an export file
  with its five lifecycle events and the decision (what ``baton verify``
  runs after reading the file);
* components of the above, to show where the time goes.

Baselines, measured in the same run on the same data: ``canonical_json`` of
the bundle document (the serialisation floor of any signed JCS artifact),
stdlib ``json.loads`` of the payload (the parsing floor), one raw Ed25519 JWS
sign and verify of the payload, and one raw JWE encrypt/decrypt of it.
Compare ratios, not absolute times, across machines (see ``bench/RESULTS.md``).

``--write`` writes ``bench/results/handoff.md`` and ``handoff.json``;
``bench/RESULTS.md`` is not touched.
"""

from __future__ import annotations

import argparse
import datetime as dt
import gc
import json
import math
import os
import platform
import random
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from gateway.verify import build_export, decision_digest, verify_artifact
from keys import jose, strictjson
from keys.keyset import KeySet, PrivateKeySet
from keys.material import ENCRYPTION_ALG, PrivateKey
from protocol.bundle import (
    BUNDLE_JWE_TYP,
    BUNDLE_JWS_TYP,
    MAX_BUNDLE_BYTES,
    HandoffBundle,
    _parse_canonical,
    _Parts,
    build_bundle,
    open_bundle,
    seal_bundle,
    verify_integrity,
)
from protocol.canonical import canonical_digest, canonical_json, digest
from protocol.chain import EMPTY, verify_links
from protocol.decision import DecisionBinding, DecisionBody, make_decision_at, sign_decision
from protocol.directory import KeyDirectory
from protocol.handoff import HandoffRequest
from protocol.lifecycle import LifecycleEvent, sign_event
from protocol.transcript import TranscriptEntry

TD = "baton.local"
TRIAGE = f"spiffe://{TD}/agent/triage"
REFUND = f"spiffe://{TD}/agent/refund-agent"
PAYMENTS = f"spiffe://{TD}/agent/payments"
GATEWAY = f"spiffe://{TD}/gateway/gw1"
ALICE, BOB = "operator:alice", "operator:bob"
QUEUE = "payments-t2"
CONVERSATION = "a2a:ctx-bench-0001"
BUNDLE_ID = "hb_01JBENCHMARKBUNDLE01"
NOW = 1_750_000_000
NOW_MS = NOW * 1000
ARGS = {"amount": 900, "order": "A-77", "currency": "EUR"}
GOAL_MS = 100.0

WORDS = tuple(
    " ".join(
        [
            "refund order customer invoice shipped delayed damaged replacement approve limit",
            "policy account verified payment card bank transfer EUR amount requested agent",
            "escalate review Rückerstattung für Bestellung Kundin möchte",
        ]
    ).split(" ")
)


# --------------------------------------------------------------------------- workload


def _text(rng: random.Random, size: int) -> str:
    words: list[str] = []
    while sum(len(w) + 1 for w in words) < size:
        words.append(rng.choice(WORDS))
    return " ".join(words)


def _body(rng: random.Random, seq: int) -> bytes:
    """One message of 300-1,000 bytes, by the entry's place in a 4-step exchange."""
    target = rng.randint(300, 1000)
    kind = seq % 4
    message: dict[str, Any]
    if kind == 0:  # triage -> refund-agent, A2A SendMessage
        message = {
            "jsonrpc": "2.0",
            "id": seq,
            "method": "SendMessage",
            "params": {
                "message": {
                    "role": "ROLE_USER",
                    "messageId": f"msg-{seq:06d}",
                    "contextId": "ctx-bench-0001",
                    "parts": [{"text": ""}],
                    "metadata": {"email": f"customer{seq}@example.com", "locale": "de-DE"},
                }
            },
        }
        fill = message["params"]["message"]["parts"][0]
    elif kind == 1:  # refund-agent -> payments, MCP tools/call
        message = {
            "jsonrpc": "2.0",
            "id": seq,
            "method": "tools/call",
            "params": {
                "name": "refund.lookup",
                "arguments": {"order": f"A-{seq}", "amount": seq % 997, "note": ""},
            },
        }
        fill = message["params"]["arguments"]
        fill["text"] = ""
    elif kind == 2:  # payments -> refund-agent, MCP result
        message = {
            "jsonrpc": "2.0",
            "id": seq - 1,
            "result": {"content": [{"type": "text", "text": ""}], "isError": False},
        }
        fill = message["result"]["content"][0]
    else:  # refund-agent -> triage, A2A task
        message = {
            "jsonrpc": "2.0",
            "id": seq - 3,
            "result": {
                "task": {
                    "id": f"task-{seq:06d}",
                    "contextId": "ctx-bench-0001",
                    "status": {"state": "TASK_STATE_COMPLETED"},
                    "artifacts": [{"artifactId": f"a-{seq}", "parts": [{"text": ""}]}],
                }
            },
        }
        fill = message["result"]["task"]["artifacts"][0]["parts"][0]
    base = len(json.dumps(message, separators=(",", ":"), ensure_ascii=False).encode())
    fill["text"] = _text(rng, max(0, target - base))
    return json.dumps(message, separators=(",", ":"), ensure_ascii=False).encode()


_ROUTES = (
    (TRIAGE, REFUND, "a2a", "request", "SendMessage"),
    (REFUND, PAYMENTS, "mcp", "request", "tools/call"),
    (PAYMENTS, REFUND, "mcp", "response", None),
    (REFUND, TRIAGE, "a2a", "response", None),
)


def conversation(entries: int) -> tuple[list[TranscriptEntry], dict[int, tuple[str, bytes]]]:
    """The recorded conversation, entries re-parsed from their stored bytes."""
    rng = random.Random(20251201)  # a reproducible workload
    created = []
    bodies: dict[int, tuple[str, bytes]] = {}
    head = EMPTY
    for seq in range(entries):
        body = _body(rng, seq)
        sender, to, protocol, kind, method = _ROUTES[seq % 4]
        entry = TranscriptEntry.create(
            head,
            conversation=CONVERSATION,
            ts=NOW_MS - (entries - seq) * 50,
            **{"from": sender},
            to=to,
            protocol=protocol,
            kind=kind,
            method=method,
            rpc_id=seq,
            status=200 if kind == "response" else None,
            body_digest=digest(body),
            body_size=len(body),
            signer=f"kid-{sender.rsplit('/', 1)[1]}",
            verified=True,
        )
        created.append(entry)
        bodies[seq] = ("application/json", body)
        head = entry.head
    stored = [TranscriptEntry.parse(entry.canonical()) for entry in created]
    return stored, bodies


def handoff_request() -> HandoffRequest:
    return HandoffRequest.from_value(
        {
            "reason_code": "refund_over_limit",
            "reason_text": "Refund 900 EUR for customer7@example.com is over the 500 EUR limit",
            "trigger": "authorization",
            "failure": {"status": "blocked", "exit_reason": "policy_denied", "retry_count": 0},
            "requested_action": {
                "kind": "tool_call",
                "target": "payments/refund.create",
                "arguments": ARGS,
                "args_digest": canonical_digest(ARGS),
            },
            "allowed_decisions": ["approve", "edit", "reject"],
            "sla": {"ack_within_s": 300, "resolve_within_s": 3600},
            "idempotency_key": "idem-bench-0001",
            "pii_paths": ["/request/reason_text", "/bodies/*/json/params/message/metadata/email"],
        }
    )


# --------------------------------------------------------------------------- timing


@dataclass
class Row:
    group: str
    name: str
    median_ms: float
    p95_ms: float
    baseline: str = "-"
    baseline_ms: float = 0.0

    @property
    def ratio(self) -> float | None:
        return self.median_ms / self.baseline_ms if self.baseline_ms else None


def samples(fn: Callable[[], object], runs: int) -> list[float]:
    """Wall time of ``runs`` calls in ms, one warm-up; a full collection before
    each call (not timed), so one run's garbage is not billed to the next."""
    fn()
    times = []
    for _ in range(runs):
        gc.collect()
        start = time.perf_counter()
        fn()
        times.append((time.perf_counter() - start) * 1e3)
    return times


def p95(values: list[float]) -> float:
    ordered = sorted(values)
    return ordered[max(0, math.ceil(0.95 * len(ordered)) - 1)]


@dataclass
class Bench:
    runs: int
    rows: list[Row]

    def time(
        self,
        group: str,
        name: str,
        fn: Callable[[], object],
        *,
        baseline: str = "-",
        baseline_ms: float = 0.0,
        runs: int | None = None,
    ) -> float:
        values = samples(fn, runs or self.runs)
        median = statistics.median(values)
        self.rows.append(Row(group, name, median, p95(values), baseline, baseline_ms))
        return median


def run(entries: int, runs: int) -> tuple[list[Row], dict[str, Any]]:
    transcript, bodies = conversation(entries)
    request = handoff_request()
    gateway = PrivateKey.generate("Ed25519")
    gateway_keys = KeySet([gateway.public])
    operators = [PrivateKeySet.generate(ENCRYPTION_ALG) for _ in range(2)]
    recipients = [keys.active.public for keys in operators]
    signers = {ALICE: PrivateKey.generate("ES256"), BOB: PrivateKey.generate("ES256")}
    directory = KeyDirectory(
        {
            who: KeySet([key.public, enc.active.public])
            for (who, key), enc in zip(signers.items(), operators, strict=True)
        }
    )

    def build() -> Any:
        return build_bundle(
            bundle_id=BUNDLE_ID,
            request=request,
            queue=QUEUE,
            conversation=CONVERSATION,
            origin=TRIAGE,
            gateway=GATEWAY,
            transcript=transcript,
            bodies=bodies,
            now=NOW,
        )

    built = build()
    sealed = seal_bundle(built, gateway_key=gateway, recipients=recipients)
    payload = built.bundle.canonical()
    document = built.bundle.to_json()
    jws = jose.sign_compact(payload, gateway, typ=BUNDLE_JWS_TYP)
    decision = sign_decision(
        make_decision_at(
            DecisionBinding(BUNDLE_ID, sealed.bundle_digest, 1, 1),
            DecisionBody.from_value({"type": "approve", "commitment": "agreed"}),
            operator=ALICE,
            now=NOW + 1,
        ),
        signers[ALICE],
    )
    events = _lifecycle(decision)
    export = build_export(
        bundle=sealed.jwe,
        events=[sign_event(event, gateway) for event in events],
        decision=decision,
        queue=QUEUE,
        conversation=CONVERSATION,
    )
    parsed = HandoffBundle.parse(payload, max_bytes=MAX_BUNDLE_BYTES)

    bench = Bench(runs, [])
    # Same-run baselines first.
    jcs = bench.time(
        "baseline", "canonical_json(bundle document)", lambda: canonical_json(document)
    )
    loads = bench.time(
        "baseline",
        "json.loads(payload) (stdlib, no checks)",
        lambda: json.loads(payload),  # the stdlib floor, on our own bytes
    )
    sign = bench.time(
        "baseline",
        "JWS sign of the payload (Ed25519)",
        lambda: jose.sign_compact(payload, gateway, typ=BUNDLE_JWS_TYP),
    )
    verify = bench.time(
        "baseline",
        "JWS verify of the payload",
        lambda: jose.verify_compact(jws, gateway_keys, typ=BUNDLE_JWS_TYP, max_bytes=4 * len(jws)),
    )
    encrypt = bench.time(
        "baseline",
        "JWE encrypt of the JWS to 2 keys",
        lambda: jose.encrypt_general(jws.encode(), recipients, typ=BUNDLE_JWE_TYP),
    )
    decrypt = bench.time(
        "baseline",
        "JWE decrypt",
        lambda: jose.decrypt(
            sealed.jwe, operators[0].active, typ=BUNDLE_JWE_TYP, max_bytes=MAX_BUNDLE_BYTES * 2
        ),
    )
    floor_seal = jcs + sign + 2 * encrypt  # payload + JWS + bundle and reveal-set JWEs
    floor_open = decrypt + verify + loads + jcs

    # The operations.
    build_ms = bench.time(
        "handoff", "build", build, baseline="canonical_json(document)", baseline_ms=jcs
    )
    bench.time(
        "handoff",
        "seal (sign + encrypt to 2 operators)",
        lambda: seal_bundle(built, gateway_key=gateway, recipients=recipients),
        baseline="JCS + JWS sign + 2 JWE",
        baseline_ms=floor_seal,
    )
    bench.time(
        "handoff",
        "build + seal",
        lambda: seal_bundle(build(), gateway_key=gateway, recipients=recipients),
        baseline="JCS + JWS sign + 2 JWE",
        baseline_ms=floor_seal,
    )
    bench.time(
        "handoff",
        "open (decrypt + verify + integrity + chain)",
        lambda: open_bundle(sealed.jwe, operators[0], gateway_keys),
        baseline="decrypt + JWS verify + json.loads + JCS",
        baseline_ms=floor_open,
    )
    bench.time(
        "handoff",
        "verify export (baton verify, with lifecycle + decision)",
        lambda: verify_artifact(
            export,
            gateway_keys=gateway_keys,
            operator_keys=directory,
            operator_private=operators[0],
            now=NOW + 3600,
            queue_operators={QUEUE: {ALICE, BOB}},
        ),
        baseline="decrypt + JWS verify + json.loads + JCS",
        baseline_ms=floor_open,
    )

    # Components: where the time goes.
    bench.time(
        "component",
        f"verify_links ({entries} parsed entries)",
        lambda: verify_links(transcript, scope=CONVERSATION),
    )
    bench.time(
        "component",
        f"canonical_digest of {entries} parsed bodies",
        lambda: [canonical_digest(strictjson.loads(body)) for _, body in bodies.values()],
    )
    bench.time(
        "component",
        "HandoffBundle.parse(payload) (strict JSON + pydantic)",
        lambda: HandoffBundle.parse(payload, max_bytes=MAX_BUNDLE_BYTES),
        baseline="json.loads",
        baseline_ms=loads,
    )
    bench.time(
        "component",
        "parse + canonical-form check, as open runs it (strict parse skipped)",
        lambda: _parse_canonical(payload),
        baseline="json.loads + JCS",
        baseline_ms=loads + jcs,
    )
    bench.time(
        "component",
        "bundle.canonical() (model -> JCS)",
        parsed.canonical,
        baseline="canonical_json(document)",
        baseline_ms=jcs,
    )
    bench.time("component", "verify_integrity(parsed bundle)", lambda: verify_integrity(parsed))
    parsed_document = parsed.to_json()
    bench.time(
        "component",
        "  of which: one JCS pass (payload, content, entry and body hashes)",
        lambda: _Parts.of(parsed_document).payload(parsed_document),
        baseline="canonical_json(document)",
        baseline_ms=jcs,
    )
    meta = {
        "entries": entries,
        "runs": runs,
        "payload_bytes": len(payload),
        "bodies_bytes": sum(len(body) for _, body in bodies.values()),
        "jwe_bytes": len(json.dumps(sealed.jwe)),
        "export_bytes": len(export),
        "goal_ms": GOAL_MS,
        "build_ms": build_ms,
    }
    return bench.rows, meta


def _lifecycle(decision: str) -> list[LifecycleEvent]:
    steps: list[dict[str, Any]] = [
        {"ts": NOW_MS + 100, "type": "queued", "actor": GATEWAY},
        {"ts": NOW_MS + 1_000, "type": "claimed", "actor": ALICE, "fencing_token": 1,
         "lease_until": NOW + 900},
        {"ts": NOW_MS + 2_000, "type": "decided", "actor": ALICE, "fencing_token": 1,
         "decision_digest": decision_digest(decision)},
        {"ts": NOW_MS + 3_000, "type": "delivered", "actor": GATEWAY},
        {"ts": NOW_MS + 4_000, "type": "acknowledged", "actor": TRIAGE, "outcome": "executed"},
    ]  # fmt: skip
    events, head = [], EMPTY
    for step in steps:
        event = LifecycleEvent.create(head, bundle_id=BUNDLE_ID, version=1, **step)
        events.append(event)
        head = event.head
    return events


# --------------------------------------------------------------------------- output


def machine() -> str:
    return (
        f"{platform.machine()}, {os.cpu_count()} CPUs, Python {platform.python_version()}, "
        f"{platform.system()} {platform.release()}"
    )


def commit() -> str:
    out = subprocess.run(  # noqa: S603
        ["/usr/bin/git", "-C", str(ROOT), "rev-parse", "HEAD"],
        capture_output=True,
        text=True,
        check=False,
    )
    return out.stdout.strip() or "unknown"


def render(rows: list[Row], meta: dict[str, Any]) -> str:
    lines = [
        f"Machine: {meta['machine']}. {meta['entries']} transcript entries, "
        f"{meta['bodies_bytes'] / 1e3:.0f} kB of JSON bodies; bundle payload "
        f"{meta['payload_bytes'] / 1e6:.2f} MB, sealed {meta['jwe_bytes'] / 1e6:.2f} MB. "
        f"Median and p95 of {meta['runs']} runs, one core, GC collected between runs. "
        f"Goal: each operation well under {meta['goal_ms']:.0f} ms.",
        "",
        "| group | operation | median ms | p95 ms | baseline (same run) | baseline ms | ratio |",
        "|---|---|---:|---:|---|---:|---:|",
    ]
    for r in rows:
        ratio = f"{r.ratio:.1f}" if r.ratio is not None else "-"
        base = f"{r.baseline_ms:.1f}" if r.baseline_ms else "-"
        lines.append(
            f"| {r.group} | {r.name} | {r.median_ms:.1f} | {r.p95_ms:.1f} | {r.baseline} "
            f"| {base} | {ratio} |"
        )
    over = [r for r in rows if r.group == "handoff" and r.median_ms >= meta["goal_ms"]]
    lines += [
        "",
        (
            f"Goal ({meta['goal_ms']:.0f} ms) missed by: "
            + "; ".join(f"{r.name} {r.median_ms:.0f} ms" for r in over)
            + "."
            if over
            else f"Goal met: every handoff operation under {meta['goal_ms']:.0f} ms (median)."
        ),
    ]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=30, help="timed runs per operation")
    parser.add_argument("--entries", type=int, default=1000, help="transcript entries")
    parser.add_argument("--quick", action="store_true", help="5 runs (a smoke test)")
    parser.add_argument(
        "--write", action="store_true", help="write bench/results/handoff.md and handoff.json"
    )
    args = parser.parse_args()
    runs = 5 if args.quick else args.runs
    started = time.monotonic()
    rows, meta = run(args.entries, runs)
    meta |= {
        "machine": machine(),
        "date": dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "commit": commit(),
        "harness_s": round(time.monotonic() - started),
    }
    table = render(rows, meta)
    print(table)
    if args.write:
        command = ".venv/bin/python bench/bench_handoff.py --write"
        if runs != 30 or args.entries != 1000:
            command += f" --runs {runs} --entries {args.entries}"
        results = ROOT / "bench" / "results"
        results.mkdir(parents=True, exist_ok=True)
        document = {"meta": meta, "command": command, "rows": [asdict(r) for r in rows]}
        (results / "handoff.json").write_text(json.dumps(document, indent=1) + "\n")
        (results / "handoff.md").write_text(
            "# Handoff bundle benchmark\n\n"
            f"`{command}` ({meta['date']}, commit {meta['commit'][:10]})\n\n" + table
        )


if __name__ == "__main__":
    main()
