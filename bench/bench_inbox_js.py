"""The operator web inbox opening a handoff bundle: JavaScript against Python.

Run: ``.venv/bin/python bench/bench_inbox_js.py [--runs N] [--write]``

The bundle is the one ``bench/bench_handoff.py`` builds (its conversation of
1,000 transcript entries with 646 kB of JSON bodies and its handoff request,
imported from it), built once with the real Python code
(:func:`protocol.bundle.build_bundle`), signed by an Ed25519 gateway key and
sealed (:func:`protocol.bundle.seal_bundle`) to two operators: one made by
:func:`gateway.devdata.write_operator`, whose private key files are the ones
the inbox imports, and one other. The JWE, the operator's ``signing.jwks`` and
``encryption.jwks`` and the gateway's public JWKS are written to a temporary
folder; ``bench/inbox_open.mjs`` opens the bundle in one Node process with the
browser's modules (``gateway/web/static/js/``, imported by relative path).
Node's WebCrypto is the browser's API (``globalThis.crypto.subtle``), so Node
stands in for the browser's cryptography; V8 is Chrome's engine.

Timed in the same run, ``--runs`` times each (default 30), median and p95 in
milliseconds, a full collection (untimed) before every timed run on both sides
(Python ``gc.collect``, Node ``global.gc``):

* **open**: Python :func:`protocol.bundle.open_bundle` against JS
  ``openBundle`` as ``pages/bundle.js`` calls it: the JWE object from the
  reply, the operator's imported encryption key, the imported gateway keys.
  Both decrypt, verify the JWS, parse strictly, check the RFC 8785 form,
  validate, and run every integrity check (chain, content and body digests,
  agent views, masked paths);
* its two cryptographic steps on both sides (JWE decrypt, JWS verify);
* the JS steps on their own, with the modules' exported functions, to show
  where the JavaScript's time goes (and two floors: native ``JSON.parse``,
  synchronous ``node:crypto`` SHA-256);
* where the JS time goes inside ``openBundle`` itself: V8's sampling CPU
  profiler over 10 more opens, self time by module and by what the engine
  did (garbage collection; the main thread idle while WebCrypto jobs run on
  Node's thread pool);
* once, cold, before anything else in Node: ``importOperatorFiles`` of the two
  key files (as ``pages/keys.js`` imports them) and ``importPublicJwks`` of the
  gateway JWKS; also the first (cold) ``openBundle``, which a page load sees.

The paired rows run in 5 rounds that alternate Python and JS (and who goes
first), so a change in the machine's load falls on both sides of the ratio.
Warm-up: one call per operation in Python (as ``bench_handoff.py``), three
per step in Node (for V8's compiler tiers), after the cold first open.

Before any timing the JS result's ``bundleDigest`` must equal the Python's
``bundle_digest`` (the run fails otherwise). Compare the ratio, not absolute
times, across machines (``bench/RESULTS.md``).

``--write`` writes ``bench/results/inbox_js.md`` and ``inbox_js.json``;
``bench/RESULTS.md`` is not touched.
"""

from __future__ import annotations

import argparse
import datetime as dt
import gc
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.bench_handoff import (
    BUNDLE_ID,
    CONVERSATION,
    GATEWAY,
    NOW,
    QUEUE,
    TRIAGE,
    commit,
    conversation,
    handoff_request,
    machine,
    p95,
)
from gateway.devdata import DataFolder, write_operator
from keys import jose
from keys.files import load_jwks, load_private_jwks, save_jwks
from keys.keyset import KeySet, PrivateKeySet
from keys.material import ENCRYPTION_ALG, PrivateKey
from protocol.bundle import (
    BUNDLE_JWE_TYP,
    BUNDLE_JWS_TYP,
    MAX_BUNDLE_BYTES,
    build_bundle,
    open_bundle,
    seal_bundle,
)

SCRIPT = ROOT / "bench" / "inbox_open.mjs"
ENTRIES = 1000
OPERATOR = "bench"
JS_WARMUP = 3
ROUNDS = 5
PROFILE_OPENS = 10
JS_ONLY = (
    "ascii", "b64", "parse", "json_parse", "jcs", "chain", "bodies", "bodies_sha",
    "bodies_sha_sync", "payload_sha",
)  # fmt: skip
NODE_MIN_MAJOR = 20


@dataclass
class Row:
    group: str
    name: str
    python_ms: float | None
    python_p95_ms: float | None
    js_ms: float | None
    js_p95_ms: float | None

    @property
    def ratio(self) -> float | None:
        if self.python_ms and self.js_ms is not None:
            return self.js_ms / self.python_ms
        return None


def stats(values: list[float]) -> tuple[float, float]:
    return statistics.median(values), p95(values)


def python_times(fn: Callable[[], object], k: int) -> list[float]:
    """Wall time of ``k`` calls in ms, a full collection (untimed) before each;
    the warm-up is the caller's (``bench_handoff.samples`` without it)."""
    times = []
    for _ in range(k):
        gc.collect()
        start = time.perf_counter()
        fn()
        times.append((time.perf_counter() - start) * 1e3)
    return times


def chunks(runs: int, rounds: int) -> list[int]:
    """``runs`` split into at most ``rounds`` near-equal positive parts."""
    rounds = min(rounds, runs)
    return [runs // rounds + (1 if i < runs % rounds else 0) for i in range(rounds)]


class NodeSteps:
    """``bench/inbox_open.mjs`` in one Node process, answering "NAME K" lines."""

    def __init__(self, node_bin: str, folder: Path, expected_digest: str) -> None:
        self.proc = subprocess.Popen(  # noqa: S603
            [node_bin, "--expose-gc", str(SCRIPT), str(folder), str(JS_WARMUP), expected_digest],
            cwd=ROOT,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        self.ready: dict[str, Any] = self._answer()["ready"]
        self.gc: dict[str, list[float]] = {}

    def _answer(self) -> dict[str, Any]:
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        if not line:
            assert self.proc.stderr is not None
            code = self.proc.wait(timeout=10)
            sys.exit(f"{SCRIPT.name} failed ({code}):\n{self.proc.stderr.read()[-4000:]}")
        answer: dict[str, Any] = json.loads(line)
        return answer

    def times(self, name: str, k: int) -> list[float]:
        """``k`` timed runs of step ``name``; their GC pauses go to ``self.gc``."""
        assert self.proc.stdin is not None
        self.proc.stdin.write(f"{name} {k}\n")
        self.proc.stdin.flush()
        answer = self._answer()
        assert answer["name"] == name, answer
        self.gc.setdefault(name, []).extend(float(t) for t in answer["gc"])
        return [float(t) for t in answer["times"]]

    def profile(self, k: int) -> dict[str, Any]:
        """``k`` opens under V8's CPU profiler: self time per open, by bucket."""
        assert self.proc.stdin is not None
        self.proc.stdin.write(f"profile {k}\n")
        self.proc.stdin.flush()
        profile: dict[str, Any] = self._answer()["profile"]
        return profile

    def close(self) -> None:
        assert self.proc.stdin is not None
        try:
            if self.proc.poll() is None:
                self.proc.stdin.write("quit\n")
                self.proc.stdin.flush()
            self.proc.wait(timeout=30)
        except (BrokenPipeError, subprocess.TimeoutExpired):
            self.proc.kill()  # ours, by its handle
            self.proc.wait()


def node() -> str:
    found = shutil.which("node")
    if found is None:
        sys.exit("node is not installed: this benchmark needs Node >= 20")
    version = subprocess.run(  # noqa: S603
        [found, "--version"], capture_output=True, text=True, check=True
    ).stdout.strip()
    if int(version.lstrip("v").split(".")[0]) < NODE_MIN_MAJOR:
        sys.exit(f"node {version} is too old: this benchmark needs Node >= 20")
    return found


def prepare(folder: Path) -> dict[str, Any]:
    """Build and seal the bench bundle; write the JWE and the key files to ``folder``."""
    transcript, bodies = conversation(ENTRIES)
    gateway = PrivateKey.generate("Ed25519")
    save_jwks(folder / "gateway.jwks", KeySet([gateway.public]))
    data = DataFolder(folder / "inbox")
    write_operator(data, OPERATOR, now=dt.datetime.fromtimestamp(NOW, dt.UTC))
    keys = data.operator(OPERATOR)
    for name in ("signing.jwks", "encryption.jwks"):
        shutil.copy(keys / name, folder / name)  # keeps mode 0600
    operator = load_private_jwks(keys / "encryption.jwks")
    other = PrivateKeySet.generate(ENCRYPTION_ALG)
    started = time.perf_counter()
    built = build_bundle(
        bundle_id=BUNDLE_ID,
        request=handoff_request(),
        queue=QUEUE,
        conversation=CONVERSATION,
        origin=TRIAGE,
        gateway=GATEWAY,
        transcript=transcript,
        bodies=bodies,
        now=NOW,
    )
    sealed = seal_bundle(
        built, gateway_key=gateway, recipients=[operator.active.public, other.active.public]
    )
    build_ms = (time.perf_counter() - started) * 1e3
    jwe_text = json.dumps(sealed.jwe, separators=(",", ":"))
    (folder / "bundle.jwe.json").write_text(jwe_text)
    return {
        "jwe": json.loads(jwe_text),  # what the gateway sends, as read back from the file
        "operator": operator,
        "gateway_keys": load_jwks(folder / "gateway.jwks"),
        "sealed_digest": sealed.bundle_digest,
        "payload_bytes": len(built.bundle.canonical()),
        "bodies_bytes": sum(len(body) for _, body in bodies.values()),
        "jwe_bytes": len(jwe_text),
        "build_seal_ms": build_ms,
    }


def run(runs: int) -> tuple[list[Row], dict[str, Any]]:
    node_bin = node()
    load_before = os.getloadavg()[0]
    with tempfile.TemporaryDirectory(prefix="baton-bench-inbox-") as tmp:
        folder = Path(tmp)
        fx = prepare(folder)
        jwe, operator, gateway_keys = fx["jwe"], fx["operator"], fx["gateway_keys"]

        opened = open_bundle(jwe, operator, gateway_keys)
        if opened.bundle_digest != fx["sealed_digest"]:
            sys.exit("Python open_bundle's digest is not seal_bundle's")
        key = jose.recipient_key(jwe, operator)
        jws = jose.decrypt(jwe, key, typ=BUNDLE_JWE_TYP, max_bytes=MAX_BUNDLE_BYTES * 2).plaintext

        pairs: dict[str, Callable[[], object]] = {
            "open": lambda: open_bundle(jwe, operator, gateway_keys),
            "decrypt": lambda: jose.decrypt(
                jwe, key, typ=BUNDLE_JWE_TYP, max_bytes=MAX_BUNDLE_BYTES * 2
            ),
            "verify": lambda: jose.verify_compact(
                jws, gateway_keys, typ=BUNDLE_JWS_TYP, max_bytes=MAX_BUNDLE_BYTES
            ),
        }
        for fn in pairs.values():
            fn()  # the Python warm-up, as bench_handoff.samples does

        node_steps = NodeSteps(node_bin, folder, opened.bundle_digest)
        try:
            js = node_steps.ready
            if js["bundle_digest"] != opened.bundle_digest:
                sys.exit(
                    f"bundleDigest mismatch: JS {js['bundle_digest']}, "
                    f"Python {opened.bundle_digest}"
                )
            # Python and JS alternate in rounds (who goes first too), so a
            # change in the machine's load falls on both sides of each ratio.
            py: dict[str, list[float]] = {name: [] for name in pairs}
            jst: dict[str, list[float]] = {name: [] for name in [*pairs, *JS_ONLY]}
            for index, k in enumerate(chunks(runs, ROUNDS)):
                for name, fn in pairs.items():
                    if index % 2 == 0:
                        py[name] += python_times(fn, k)
                        jst[name] += node_steps.times(name, k)
                    else:
                        jst[name] += node_steps.times(name, k)
                        py[name] += python_times(fn, k)
            for name in JS_ONLY:
                jst[name] = node_steps.times(name, runs)
            profile = node_steps.profile(min(runs, PROFILE_OPENS))
        finally:
            node_steps.close()
        js_gc = {name: stats(values) for name, values in node_steps.gc.items()}

    c = {name: stats(values) for name, values in jst.items()}
    py_open, py_decrypt, py_verify = (stats(py[name]) for name in pairs)

    def js_row(group: str, label: str, name: str) -> Row:
        return Row(group, label, None, None, *c[name])

    entries, nbodies = js["entries"], js["bodies"]
    rows = [
        Row(
            "open",
            "open a bundle: decrypt + JWS verify + parse + canonical check + integrity",
            *py_open,
            *c["open"],
        ),
        Row("js step", "  of which GC pauses inside the timed runs (V8, PerformanceObserver)",
            None, None, *js_gc["open"]),
        Row("step", "JWE decrypt (ECDH-ES+A256KW, A256GCM)", *py_decrypt, *c["decrypt"]),
        Row("step", "JWS verify (base64url + Ed25519)", *py_verify, *c["verify"]),
        js_row("js step", "ASCII check + UTF-8 decode of the JWS", "ascii"),
        js_row("js step", "  in JWS verify: base64url decode of the payload", "b64"),
        js_row("js step", "strict parse of the payload (jcs.js parseStrict)", "parse"),
        js_row("js floor", "  JSON.parse of the payload (native, no checks)", "json_parse"),
        js_row("js step", "one JCS pass of the bundle (runs twice: form check, content)",
               "jcs"),
        js_row("js step", f"chain: {entries} entry hashes (JCS + SHA-256, Promise.all)",
               "chain"),
        js_row("js step", f"{nbodies} body digests (JCS + SHA-256, awaited in turn)",
               "bodies"),
        js_row("js step", f"  of which the {nbodies} awaited SHA-256 calls alone",
               "bodies_sha"),
        js_row("js floor", f"  the same {nbodies} SHA-256, node:crypto, synchronous (Node only)",
               "bodies_sha_sync"),
        js_row("js step", "SHA-256 of the payload (runs twice: content, bundleDigest)",
               "payload_sha"),
        Row("js once", "importOperatorFiles(signing.jwks, encryption.jwks), cold", None, None,
            js["once"]["import_operator_ms"], None),
        Row("js once", "importPublicJwks(gateway JWKS), cold", None, None,
            js["once"]["import_gateway_ms"], None),
        Row("js once", "JSON.parse of the reply's JWE (response.json(), not in open)", None,
            None, js["once"]["reply_parse_ms"], None),
        Row("js once", "first openBundle, cold (not in the median)", None, None,
            js["once"]["first_open_ms"], None),
    ]  # fmt: skip
    meta = {
        "entries": entries,
        "bodies": nbodies,
        "masked": js["masked"],
        "runs": runs,
        "js_warmup": js["warmup"],
        "rounds": len(chunks(runs, ROUNDS)),
        "payload_bytes": fx["payload_bytes"],
        "bodies_bytes": fx["bodies_bytes"],
        "jwe_bytes": fx["jwe_bytes"],
        "build_seal_ms": fx["build_seal_ms"],
        "bundle_digest": opened.bundle_digest,
        "node": js["node"],
        "v8": js["v8"],
        "js_checks": js["checks"],
        "js_profile": profile,
        "js_gc_ms": {name: {"median_ms": m, "p95_ms": q} for name, (m, q) in js_gc.items()},
        "loadavg_1m": [round(load_before, 2), round(os.getloadavg()[0], 2)],
    }
    return rows, meta


# --------------------------------------------------------------------------- output


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f}"


def render(rows: list[Row], meta: dict[str, Any]) -> str:
    open_row = rows[0]
    lines = [
        f"Machine: {meta['machine']}, Node {meta['node']} (V8 {meta['v8']}). "
        f"The bench_handoff.py bundle: {meta['entries']} transcript entries, "
        f"{meta['bodies_bytes'] / 1e3:.0f} kB of JSON bodies, {meta['masked']} masked fields; "
        f"payload {meta['payload_bytes'] / 1e6:.2f} MB, sealed to 2 operators "
        f"{meta['jwe_bytes'] / 1e6:.2f} MB. Median and p95 of {meta['runs']} runs; the "
        f"paired rows alternate Python and JS in {meta['rounds']} rounds. GC collected "
        f"between runs (Python gc.collect, Node global.gc); warm-up 1 run in Python, "
        f"{meta['js_warmup']} in Node. Single-threaded code on both sides, but Node runs "
        f"each WebCrypto call as a job on its thread pool. JS bundleDigest checked equal "
        f"to Python's before timing. Load average (1 min) before and after: "
        f"{meta['loadavg_1m'][0]:.2f}, {meta['loadavg_1m'][1]:.2f}.",
        "",
        "| group | operation | Python median ms | Python p95 ms | JS median ms | JS p95 ms "
        "| JS/Python |",
        "|---|---|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        ratio = f"{r.ratio:.2f}" if r.ratio is not None else "-"
        lines.append(
            f"| {r.group} | {r.name} | {_ms(r.python_ms)} | {_ms(r.python_p95_ms)} "
            f"| {_ms(r.js_ms)} | {_ms(r.js_p95_ms)} | {ratio} |"
        )
    profile = meta["js_profile"]
    total = sum(profile["buckets"].values())
    lines += [
        "",
        f"Where JS openBundle's time goes: V8's sampling CPU profiler (100 us) over "
        f"{profile['opens']} more opens (no forced GC between them, profiler overhead "
        f"included), self time per open, {total:.0f} ms in all:",
        "",
        "| what ran | ms per open | share |",
        "|---|---:|---:|",
    ]
    for name, ms in sorted(profile["buckets"].items(), key=lambda item: -item[1]):
        lines.append(f"| {name} | {ms:.1f} | {100 * ms / total:.0f}% |")
    lines += [
        "",
        f"Opening the bundle in JavaScript takes {open_row.ratio:.2f}x the Python's time "
        f"({_ms(open_row.js_ms)} ms against {_ms(open_row.python_ms)} ms, median).",
    ]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=30, help="timed runs per operation")
    parser.add_argument(
        "--write", action="store_true", help="write bench/results/inbox_js.md and inbox_js.json"
    )
    args = parser.parse_args()
    if args.runs < 1:
        parser.error("--runs must be at least 1")
    started = time.monotonic()
    rows, meta = run(args.runs)
    meta |= {
        "machine": machine(),
        "date": dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "commit": commit(),
        "harness_s": round(time.monotonic() - started),
    }
    table = render(rows, meta)
    print(table)
    if args.write:
        command = ".venv/bin/python bench/bench_inbox_js.py --write"
        if args.runs != 30:
            command += f" --runs {args.runs}"
        results = ROOT / "bench" / "results"
        results.mkdir(parents=True, exist_ok=True)
        document = {
            "meta": meta,
            "command": command,
            "rows": [asdict(r) | {"ratio": r.ratio} for r in rows],
        }
        (results / "inbox_js.json").write_text(json.dumps(document, indent=1) + "\n")
        (results / "inbox_js.md").write_text(
            "# Inbox open benchmark: JavaScript (Node) against Python\n\n"
            f"`{command}` ({meta['date']}, commit {meta['commit'][:10]})\n\n" + table
        )


if __name__ == "__main__":
    main()
