"""The ``baton`` command.

::

    baton init [--trust-domain D] [--force] [DIR]   config + dev CA + gateway keys + 2 agents
    baton keys new-agent NAME [--dir DIR]           certificate and keys for one more agent
    baton keys rotate [--agent NAME] [--dir DIR]    new active signing key; old one verify-only
    baton keys jwks [--agent NAME] [--dir DIR]      public keys as a JWKS (never private ones)
    baton operators add NAME --queue Q [--queue Q2] [--dir DIR]
                                                    keys + one-time password for an operator
    baton operators list [--dir DIR]                operators, their queues and key folders
    baton operators passwd NAME [--dir DIR]         a new one-time web-inbox password
    baton check-config [--dir DIR]                  validate baton.toml, keys and policy; exit
    baton serve [--dir DIR] [--workers N]           run the gateway (graceful stop on SIGTERM)
    baton transcript verify CONV [--dir DIR]        check a conversation's chain and bodies
    baton audit verify [--dir DIR]                  check the audit chain
    baton trace CONV [--dir DIR]                    who called whom, when, outcome, latency
    baton tools approve UPSTREAM TOOL [--dir DIR]   accept a changed MCP tool definition
    baton sidecar --agent NAME [--listen H:P] [--gateway URL] [--dir DIR]
                                                    loopback proxy signing for one agent
    baton demo [DIR]                                a signed, encrypted, replay-proof hop
    baton verify FILE [--operator-key PATH] [--dir DIR]
                                                    check a handoff export or decision offline
    baton probe URL --agent-key JWKS --upstream NAME [--client-cert F --key F] [--ca F]
                [--connections N] [--json]
                                                    run the catalogue's network attacks at a gateway
    baton inbox [--dir DIR] [--url URL] --operator NAME list [--queue Q] [--status S]
    baton inbox ... claim|release ID [--queue Q]    take or give back a handoff's lease
    baton inbox ... show ID [--json] [--reveal PTR... --reason TEXT] [--export FILE]
    baton inbox ... decide ID approve|edit|reject|respond|reroute [--arguments JSON]
                    [--response JSON] [--to-queue Q] [--message TEXT]
                                                    an operator's inbox; decrypts locally

Exit status: 0 success, 1 refused or failed (the reason on stderr), 2 usage (and for
``probe``: its baseline request was not accepted, so nothing was probed).
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import json
import sys
import time
from collections.abc import Awaitable, Callable, Coroutine, Sequence
from pathlib import Path
from typing import Any

from aiohttp import web

from gateway.config import BatonConfig, ConfigError, split_host_port
from gateway.config import load as load_config
from gateway.config import parse as parse_config
from gateway.demo import DemoFailed, run_demo
from gateway.devdata import (
    CARD_SIGNING_FILE,
    DataFolder,
    InitError,
    init_data_folder,
    reset_password,
    write_agent,
    write_operator,
)
from gateway.inbox_client import (
    ClientConfig,
    Shown,
    connect,
    decision_body,
    export,
    load_client_config,
)
from gateway.inbox_render import (
    render_claim,
    render_decided,
    render_list,
    render_released,
    render_show,
    show_json,
)
from gateway.inspect import trace_lines, verify_audit, verify_conversation
from gateway.logs import configure as configure_logs
from gateway.probe import ProbeOptions, run_probe
from gateway.recorder import Recorder
from gateway.runtime import load_runtime
from gateway.serve import run as run_server
from gateway.serve import serve_worker
from gateway.sidecar import SidecarConfig, agent_tls_context, sidecar_app
from gateway.stores import Stores
from gateway.tool_pins import ToolPins
from gateway.verify import load_verification_keys, verify_artifact
from keys.errors import KeysError
from keys.files import load_private_jwks, save_jwks, save_private_jwks
from protocol.errors import BatonError
from protocol.identity import agent_id, validate_name

__all__ = ["main"]


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def _cmd_init(args: argparse.Namespace) -> int:
    root = Path(args.dir)
    passwords: list[tuple[str, str]] = []
    folder = init_data_folder(
        root,
        trust_domain=args.trust_domain,
        force=args.force,
        now=_now(),
        on_password=lambda name, password: passwords.append((name, password)),
    )
    print(f"Baton initialised in {root.resolve()}")
    print(f"  config        {folder.config}")
    print(f"  dev CA        {folder.ca_cert}")
    print(f"  gateway keys  {folder.gateway}/ (signing key, TLS certificate)")
    print(
        f"  agents        {folder.data / 'agents'}/support, billing (and the payments tool server)"
    )
    for name, password in passwords:
        print(f"  operator      operator:{name} ({folder.operator(name)}/)")
        print(f"  password      {password}")
        print("This password is shown once and stored only as a scrypt hash: save it now.")
    print("Private keys are mode 0600 in a git-ignored folder. Next: baton demo")
    return 0


def _append_agent_to_config(folder: DataFolder, name: str) -> None:
    with folder.config.open("a", encoding="utf-8") as handle:
        handle.write(f'\n[[agents]]\nname = "{name}"\nsignatures = "required"\n')


def _cmd_new_agent(args: argparse.Namespace) -> int:
    folder = DataFolder(Path(args.dir))
    config = load_config(folder.config)
    name = validate_name(args.name)
    if folder.agent(name).exists() or any(a.name == name for a in config.agents):
        raise InitError(f"agent {name!r} already exists")
    write_agent(folder, folder.load_ca(), name, now=_now())
    _append_agent_to_config(folder, name)
    load_config(folder.config)  # the file must still validate
    print(f"agent {agent_id(config.trust_domain, name)} created in {folder.agent(name)}")
    return 0


def _signing_file(folder: DataFolder, agent: str | None) -> Path:
    if agent is None:
        return folder.gateway / "signing.jwks"
    return folder.agent(agent) / "signing.jwks"


def _cmd_rotate(args: argparse.Namespace) -> int:
    folder = DataFolder(Path(args.dir))
    load_config(folder.config)
    path = _signing_file(folder, args.agent)
    keys = load_private_jwks(path).rotated()
    save_private_jwks(path, keys)
    if args.agent is None:
        published = keys.public()
        card_file = folder.gateway / CARD_SIGNING_FILE
        if card_file.exists():  # the card key stays published beside the rotated one
            published = published.merged(load_private_jwks(card_file).public())
        save_jwks(folder.gateway / "jwks.json", published)
    else:
        encryption = load_private_jwks(folder.agent(args.agent) / "encryption.jwks")
        save_jwks(
            folder.agent(args.agent) / "public.jwks", keys.public().merged(encryption.public())
        )
    who = f"agent {args.agent}" if args.agent else "gateway"
    print(f"{who}: new active signing key {keys.active.kid}")
    print(f"  {len(keys.retired)} older key(s) kept for verification only")
    return 0


def _cmd_jwks(args: argparse.Namespace) -> int:
    folder = DataFolder(Path(args.dir))
    load_config(folder.config)
    if args.agent is None:
        public = load_private_jwks(folder.gateway / "signing.jwks").public()
        card_file = folder.gateway / CARD_SIGNING_FILE
        if card_file.exists():
            public = public.merged(load_private_jwks(card_file).public())
    else:
        agent = folder.agent(args.agent)
        public = (
            load_private_jwks(agent / "signing.jwks")
            .public()
            .merged(load_private_jwks(agent / "encryption.jwks").public())
        )
    print(json.dumps(public.to_jwks(), indent=2))
    return 0


def _operator_tables(config: BatonConfig, name: str, queues: list[str]) -> tuple[str, list[str]]:
    """TOML to append for a new operator: missing ``[[queues]]``, then its ``[[operators]]``."""
    known = {queue.name for queue in config.queues}
    new_queues = [queue for queue in queues if queue not in known]
    text = "".join(f'\n[[queues]]\nname = "{queue}"\n' for queue in new_queues)
    listed = ", ".join(f'"{queue}"' for queue in queues)
    text += f'\n[[operators]]\nname = "{name}"\nqueues = [{listed}]\n'
    return text, new_queues


def _cmd_operators_add(args: argparse.Namespace) -> int:
    """Keys and a one-time password for an operator; its queues and entry in baton.toml.

    An operator already in baton.toml without a key folder gets its keys (the
    fix ``baton serve`` names); one with a key folder is refused. The new
    configuration is validated before anything is written.
    """
    folder = DataFolder(Path(args.dir))
    config = load_config(folder.config)
    name = validate_name(args.name)
    queues = list(dict.fromkeys(validate_name(queue) for queue in args.queue))
    if folder.operator(name).exists():
        raise InitError(f"operator {name!r} already exists ({folder.operator(name)})")
    configured = next((op for op in config.operators if op.name == name), None)
    addition = ""
    new_queues: list[str] = []
    if configured is None:
        if not queues:
            raise InitError("name the queue(s) the operator serves: --queue QUEUE")
        addition, new_queues = _operator_tables(config, name, queues)
        current = folder.config.read_text(encoding="utf-8")
        if current and not current.endswith("\n"):
            addition = "\n" + addition
        parse_config(current + addition, str(folder.config))
    elif queues and set(queues) != set(configured.queues):
        raise InitError(
            f"operator {name!r} is configured with queues {configured.queues}; "
            "edit its [[operators]] entry in baton.toml to change them"
        )
    password = write_operator(folder, name, now=_now())
    if addition:
        with folder.config.open("a", encoding="utf-8") as handle:
            handle.write(addition)
    config = load_config(folder.config)  # the file must still validate
    served = next(op.queues for op in config.operators if op.name == name)
    print(f"operator operator:{name} created")
    print(f"  queues    {', '.join(served)}")
    for queue in new_queues:
        print(f"            {queue} is new: list who may escalate to it in escalate_from")
    print(f"  keys      {folder.operator(name)}/ (public keys in public.jwks)")
    print(f"  password  {password}")
    print("This password is shown once and stored only as a scrypt hash: save it now.")
    return 0


def _cmd_operators_passwd(args: argparse.Namespace) -> int:
    """Replace a configured operator's web-inbox password with a new one-time one.

    Only its scrypt hash is stored (atomically, 0600). A running gateway
    applies it at the next login or session use: the old password stops
    working and the operator's password sessions begun before it end.
    """
    folder = DataFolder(Path(args.dir))
    config = load_config(folder.config)
    name = validate_name(args.name)
    if not any(op.name == name for op in config.operators):
        raise InitError(
            f"no operator {name!r} in {folder.config}; add it with 'baton operators add'"
        )
    password = reset_password(folder, name)
    print(f"operator:{name}: new password  {password}")
    print(
        "Shown once and stored only as a scrypt hash. A running gateway applies it at once:"
        " the old password stops working and its web sessions end."
    )
    return 0


def _cmd_operators_list(args: argparse.Namespace) -> int:
    folder = DataFolder(Path(args.dir))
    config = load_config(folder.config)
    if not config.operators:
        print("no operators; add one with 'baton operators add NAME --queue QUEUE'")
        return 0
    width = max(len(op.name) for op in config.operators) + len("operator:")
    for op in config.operators:
        path = folder.operator(op.name)
        keys = f"{path}/" if path.is_dir() else f"missing: run 'baton operators add {op.name}'"
        print(f"{'operator:' + op.name:<{width}}  queues: {', '.join(op.queues)}  keys: {keys}")
    return 0


def _cmd_check_config(args: argparse.Namespace) -> int:
    folder = DataFolder(Path(args.dir))
    config = load_config(folder.config)
    runtime = load_runtime(config, folder.root)
    rules = len(config.policy.allow)
    print(
        f"{folder.config}: ok (trust domain {config.trust_domain}, {len(config.agents)} agents, "
        f"{len(config.upstreams)} upstreams, {rules} policy rules, store {config.store.kind}, "
        f"gateway {runtime.identity})"
    )
    if config.queues:
        holds = len(config.policy.require_approval)
        listener = config.gateway.operator_listen or "off"
        print(
            f"  handoff: {len(config.queues)} queues, {len(config.operators)} operators, "
            f"{holds} approval rules, operator listener {listener}"
        )
        for queue in config.queues:
            served = [op.name for op in config.operators if queue.name in op.queues]
            if not served:
                print(f"  warning: queue {queue.name!r} has no operators: escalations are refused")
    return 0


def _cmd_serve(args: argparse.Namespace) -> int:
    configure_logs(args.log_level)
    config = DataFolder(Path(args.dir)).config
    if args.worker:
        serve_worker(config, reuse_port=True)
        return 0
    return run_server(config, workers=args.workers, log_level=args.log_level)


async def _with_stores(folder: DataFolder, use: Callable[[Stores], Awaitable[int]]) -> int:
    runtime = load_runtime(load_config(folder.config), folder.root)
    stores = await runtime.open_stores()
    try:
        return await use(stores)
    finally:
        await stores.close()


def _cmd_transcript_verify(args: argparse.Namespace) -> int:
    async def check(stores: Stores) -> int:
        report = await verify_conversation(stores.transcripts, args.conversation)
        if report.records == 0:
            print(f"baton: no transcript for conversation {args.conversation!r}", file=sys.stderr)
            return 1
        print(f"{args.conversation}: ok, {report.records} entries, head {report.head.hash}")
        return 0

    return asyncio.run(_with_stores(DataFolder(Path(args.dir)), check))


def _cmd_audit_verify(args: argparse.Namespace) -> int:
    async def check(stores: Stores) -> int:
        report = await verify_audit(stores.audit)
        print(f"audit log: ok, {report.records} events, head {report.head.hash}")
        return 0

    return asyncio.run(_with_stores(DataFolder(Path(args.dir)), check))


def _cmd_tools_approve(args: argparse.Namespace) -> int:
    """Pin a changed MCP tool definition (the one gateways hid and refused), audited."""
    folder = DataFolder(Path(args.dir))
    upstream = validate_name(args.upstream)
    config = load_config(folder.config)
    if not any(u.name == upstream and u.protocol == "mcp" for u in config.upstreams):
        raise InitError(f"no MCP upstream {upstream!r} in {folder.config}")

    async def approve(stores: Stores) -> int:
        now = time.time()
        approval = await ToolPins(stores.bindings).approve(upstream, args.tool, now=now)
        if approval is None:
            print(f"baton: {upstream} tool {args.tool!r} has no change awaiting approval",
                  file=sys.stderr)  # fmt: skip
            return 1
        await Recorder(stores.transcripts, stores.audit).event(
            ts=int(now * 1000), event="tool.approved", outcome="accepted", reason=None,
            request_id="cli", peer=None, artifact_sha256=approval.approved,
            detail=f"{upstream} tool={args.tool[:200]!r} replaces={approval.previous}",
        )  # fmt: skip
        print(f"{upstream} tool {args.tool!r}: pinned {approval.approved}")
        print(f"  (was {approval.previous})")
        return 0

    return asyncio.run(_with_stores(folder, approve))


def _cmd_trace(args: argparse.Namespace) -> int:
    async def show(stores: Stores) -> int:
        entries = await stores.transcripts.read(args.conversation, limit=100_000)
        if not entries:
            print(f"baton: no transcript for conversation {args.conversation!r}", file=sys.stderr)
            return 1
        print("\n".join(trace_lines(entries)))
        return 0

    return asyncio.run(_with_stores(DataFolder(Path(args.dir)), show))


def _cmd_sidecar(args: argparse.Namespace) -> int:
    folder = DataFolder(Path(args.dir))
    config = load_config(folder.config)
    agent = folder.load_agent(config.trust_domain, validate_name(args.agent))
    host, port = split_host_port(args.listen)
    gateway = args.gateway or f"https://{config.gateway.listen}"
    tls = agent_tls_context(
        str(folder.ca_cert),
        str(folder.agent(agent.name) / "tls.pem"),
        str(folder.agent(agent.name) / "tls.key"),
    )
    sidecar = SidecarConfig(
        gateway_url=gateway,
        listen_host=host,
        listen_port=port,
        signing_key=agent.signing.active,
        tls=tls,
        allowed_origins=frozenset(origin.lower() for origin in args.allow_origin),
    )
    who = agent_id(config.trust_domain, agent.name)
    print(f"sidecar for {who}: http://{args.listen} -> {gateway}", flush=True)
    web.run_app(sidecar_app(sidecar), host=host, port=port, print=None, access_log=None)
    return 0


def _cmd_demo(args: argparse.Namespace) -> int:
    run_demo(Path(args.dir), sys.stdout)
    return 0


def _cmd_verify(args: argparse.Namespace) -> int:
    """Offline: public keys from ``--dir``, the bundle opened with ``--operator-key``."""
    keys = load_verification_keys(Path(args.dir))
    private = load_private_jwks(Path(args.operator_key)) if args.operator_key else None
    report = verify_artifact(
        Path(args.file).read_bytes(),
        gateway_keys=keys.gateway,
        operator_keys=keys.operators,
        operator_private=private,
        now=time.time(),
        expect_conversation=args.expect_conversation,
        expect_queue=args.expect_queue,
        queue_operators=keys.queue_operators,
    )
    print("\n".join(report.lines()))
    return 0


def _cmd_probe(args: argparse.Namespace) -> int:
    """The catalogue's network-reachable attacks against URL; never prints secrets."""
    options = ProbeOptions(
        url=args.url,
        upstream=validate_name(args.upstream),
        signing_key=load_private_jwks(Path(args.agent_key)).active,
        ca_file=args.ca,
        client_cert=args.client_cert,
        client_key=args.key,
        agent_id=args.agent_id,
        method=args.method,
        body_limit=args.body_limit,
        connections=args.connections,
    )
    report = asyncio.run(run_probe(options))
    if args.json:
        print(json.dumps(report.to_json(), indent=2))
    else:
        print("\n".join(report.table()))
    if not report.baseline_ok:
        print(f"baton: probe: baseline failed ({report.baseline}): nothing probed", file=sys.stderr)
    return report.exit_status()


InboxCommand = Callable[[ClientConfig, argparse.Namespace], Coroutine[Any, Any, int]]


async def _inbox_list(config: ClientConfig, args: argparse.Namespace) -> int:
    async with connect(config) as client:
        summaries = await client.list(args.queue, status=args.status)
    print("\n".join(render_list(summaries, config.clock())))
    return 0


async def _inbox_claim(config: ClientConfig, args: argparse.Namespace) -> int:
    async with connect(config) as client:
        queue = await client.locate(args.bundle_id, args.queue)
        summary = await client.claim(args.bundle_id, queue)
    print("\n".join(render_claim(summary, config.clock())))
    return 0


async def _inbox_release(config: ClientConfig, args: argparse.Namespace) -> int:
    async with connect(config) as client:
        queue = await client.locate(args.bundle_id, args.queue)
        summary = await client.release(args.bundle_id, queue)
    print("\n".join(render_released(summary)))
    return 0


async def _inbox_show(config: ClientConfig, args: argparse.Namespace) -> int:
    if args.reason is not None and not args.reveal:
        raise ValueError("--reason goes with --reveal POINTER")
    async with connect(config) as client:
        queue = await client.locate(args.bundle_id, args.queue)
        shown = await client.show(args.bundle_id, queue)
        if args.reveal:
            shown = await client.reveal(shown, args.reveal, args.reason or "")
    if args.export:
        Path(args.export).write_bytes(export(shown))
        key = config.operator.name
        note = (
            f"export written to {args.export}; check it offline with: baton verify "
            f"{args.export} --operator-key .baton/operators/{key}/encryption.jwks"
        )
        print(note, file=sys.stderr if args.json else sys.stdout)
    print(show_json(shown) if args.json else "\n".join(render_show(shown, config.clock())))
    return 0


async def _inbox_decide(config: ClientConfig, args: argparse.Namespace) -> int:
    def build(shown: Shown) -> Any:
        return decision_body(
            args.decision, shown, arguments=args.arguments, response=args.response,
            to_queue=args.to_queue, message=args.message,
        )  # fmt: skip

    async with connect(config) as client:
        queue = await client.locate(args.bundle_id, args.queue)
        shown, summary, token = await client.decide(args.bundle_id, queue, build)
    print("\n".join(render_decided(shown, summary, token)))
    return 0


_INBOX: dict[str, InboxCommand] = {
    "list": _inbox_list,
    "claim": _inbox_claim,
    "release": _inbox_release,
    "show": _inbox_show,
    "decide": _inbox_decide,
}


def _cmd_inbox(args: argparse.Namespace) -> int:
    """An operator's inbox over the operator API; bundles are decrypted here."""
    if not args.operator:
        print("baton: name the operator: baton inbox --operator NAME ...", file=sys.stderr)
        return 2
    config = load_client_config(Path(args.dir), validate_name(args.operator), url=args.url)
    return asyncio.run(_INBOX[args.inbox_command](config, args))


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="baton", description="Baton security gateway")
    commands = parser.add_subparsers(dest="command", required=True)

    init = commands.add_parser("init", help="create config, dev CA, gateway and agent keys")
    init.add_argument("dir", nargs="?", default=".", help="folder for baton.toml (default .)")
    init.add_argument("--trust-domain", default="baton.local", help="SPIFFE trust domain")
    init.add_argument("--force", action="store_true", help="replace an existing setup")
    init.set_defaults(run=_cmd_init)

    keys = commands.add_parser("keys", help="manage keys")
    key_commands = keys.add_subparsers(dest="keys_command", required=True)
    new_agent = key_commands.add_parser("new-agent", help="issue keys for a new agent")
    new_agent.add_argument("name")
    new_agent.set_defaults(run=_cmd_new_agent)
    rotate = key_commands.add_parser("rotate", help="rotate a signing key")
    rotate.add_argument("--agent", help="rotate this agent's key instead of the gateway's")
    rotate.set_defaults(run=_cmd_rotate)
    jwks = key_commands.add_parser("jwks", help="print public keys as a JWKS")
    jwks.add_argument("--agent", help="this agent's keys instead of the gateway's")
    jwks.set_defaults(run=_cmd_jwks)
    for sub in (new_agent, rotate, jwks):
        sub.add_argument("--dir", default=".", help="folder holding baton.toml (default .)")

    check = commands.add_parser("check-config", help="validate baton.toml")
    check.add_argument("--dir", default=".", help="folder holding baton.toml (default .)")
    check.set_defaults(run=_cmd_check_config)

    serve = commands.add_parser("serve", help="run the gateway")
    serve.add_argument("--dir", default=".", help="folder holding baton.toml (default .)")
    serve.add_argument("--workers", type=int, default=1, help="processes sharing the port")
    serve.add_argument("--log-level", default="info", choices=["debug", "info", "warning"])
    serve.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    serve.set_defaults(run=_cmd_serve)

    transcript = commands.add_parser("transcript", help="transcripts")
    transcript_commands = transcript.add_subparsers(dest="transcript_command", required=True)
    transcript_verify = transcript_commands.add_parser("verify", help="verify a conversation")
    transcript_verify.add_argument("conversation")
    transcript_verify.set_defaults(run=_cmd_transcript_verify)
    audit = commands.add_parser("audit", help="the audit log")
    audit_commands = audit.add_subparsers(dest="audit_command", required=True)
    audit_verify = audit_commands.add_parser("verify", help="verify the audit chain")
    audit_verify.set_defaults(run=_cmd_audit_verify)
    trace = commands.add_parser("trace", help="who called whom in a conversation")
    trace.add_argument("conversation")
    trace.set_defaults(run=_cmd_trace)
    for sub in (transcript_verify, audit_verify, trace):
        sub.add_argument("--dir", default=".", help="folder holding baton.toml (default .)")

    _tools_parser(commands)

    _sidecar_parser(commands)
    _operators_parser(commands)
    _verify_parser(commands)
    _inbox_parser(commands)
    _probe_parser(commands)

    demo = commands.add_parser(
        "demo", help="a signed, replay-proof hop, then a refund held for a person's approval"
    )
    demo.add_argument("dir", nargs="?", default=".", help="folder holding baton.toml")
    demo.set_defaults(run=_cmd_demo)
    return parser


def _sidecar_parser(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    sidecar = commands.add_parser("sidecar", help="loopback proxy that signs for one agent")
    sidecar.add_argument("--agent", required=True, help="the agent whose identity it carries")
    sidecar.add_argument("--listen", default="127.0.0.1:8444", help="loopback HOST:PORT")
    sidecar.add_argument("--gateway", help="gateway base URL (default: gateway.listen)")
    sidecar.add_argument(
        "--allow-origin", action="append", default=[], help="browser Origin to allow"
    )
    sidecar.add_argument("--dir", default=".", help="folder holding baton.toml (default .)")
    sidecar.set_defaults(run=_cmd_sidecar)


def _tools_parser(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    tools = commands.add_parser("tools", help="pinned MCP tool definitions (I04)")
    tools_commands = tools.add_subparsers(dest="tools_command", required=True)
    approve = tools_commands.add_parser(
        "approve", help="accept a changed tool definition: pin it and allow calls again"
    )
    approve.add_argument("upstream")
    approve.add_argument("tool")
    approve.add_argument("--dir", default=".", help="folder holding baton.toml (default .)")
    approve.set_defaults(run=_cmd_tools_approve)


def _operators_parser(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    operators = commands.add_parser("operators", help="people who handle handoff queues")
    operator_commands = operators.add_subparsers(dest="operators_command", required=True)
    add = operator_commands.add_parser("add", help="keys and a one-time password for an operator")
    add.add_argument("name")
    add.add_argument(
        "--queue", action="append", default=[], help="a queue it serves (repeat for more)"
    )
    add.set_defaults(run=_cmd_operators_add)
    listing = operator_commands.add_parser("list", help="operators and their queues")
    listing.set_defaults(run=_cmd_operators_list)
    passwd = operator_commands.add_parser(
        "passwd", help="a new one-time web-inbox password for an operator"
    )
    passwd.add_argument("name")
    passwd.set_defaults(run=_cmd_operators_passwd)
    for sub in (add, listing, passwd):
        sub.add_argument("--dir", default=".", help="folder holding baton.toml (default .)")


def _verify_parser(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    verify = commands.add_parser("verify", help="check a handoff export or decision offline")
    verify.add_argument("file", help="an export (baton-handoff-export), a decision or a bundle")
    verify.add_argument(
        "--operator-key", help="an operator's private encryption JWKS, to open the bundle"
    )
    verify.add_argument("--expect-queue", help="fail unless the bundle is for this queue")
    verify.add_argument("--expect-conversation", help="fail unless it is for this conversation")
    verify.add_argument("--dir", default=".", help="folder holding baton.toml (default .)")
    verify.set_defaults(run=_cmd_verify)


def _probe_parser(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    probe = commands.add_parser("probe", help="run the catalogue's network attacks at a gateway")
    probe.add_argument("url", metavar="URL", help="the gateway, https://HOST:PORT")
    probe.add_argument("--agent-key", required=True, metavar="JWKS", help="agent signing JWKS")
    probe.add_argument("--upstream", required=True, metavar="NAME", help="an upstream it may call")
    probe.add_argument("--client-cert", metavar="FILE", help="agent TLS certificate (PEM)")
    probe.add_argument("--key", metavar="FILE", help="its private key (PEM)")
    probe.add_argument("--ca", metavar="FILE", help="CA for the gateway's certificate")
    probe.add_argument("--agent-id", metavar="SPIFFE_ID", help="identity for the foreign-CA case")
    probe.add_argument("--method", default="tools/list", help="a JSON-RPC method policy allows")
    probe.add_argument("--body-limit", type=int, default=1 << 20, help="the gateway's body cap")
    probe.add_argument(
        "--connections", type=int, default=256, metavar="N",
        help="idle connections the X05 case holds before one more request (0: skip)",
    )  # fmt: skip
    probe.add_argument("--json", action="store_true", help="the report as JSON")
    probe.set_defaults(run=_cmd_probe)


def _inbox_options(parser: argparse.ArgumentParser, *, defaults: bool) -> None:
    """``--dir``, ``--url`` and ``--operator``, before or after the subcommand."""

    def default(value: object) -> object:
        return value if defaults else argparse.SUPPRESS

    parser.add_argument("--dir", default=default("."), help="folder holding baton.toml (default .)")
    parser.add_argument(
        "--url", default=default(None), help="operator API (default: https://operator_listen)"
    )
    parser.add_argument("--operator", default=default(None), help="your operator name")


def _inbox_parser(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    inbox = commands.add_parser("inbox", help="an operator's handoff inbox (decrypts locally)")
    _inbox_options(inbox, defaults=True)
    inbox.set_defaults(run=_cmd_inbox)
    sub = inbox.add_subparsers(dest="inbox_command", required=True)
    listing = sub.add_parser("list", help="handoffs in your queues")
    listing.add_argument("--queue", help="only this queue (default: every queue you serve)")
    listing.add_argument(
        "--status",
        choices=[
            "queued", "claimed", "decided", "delivered", "acknowledged", "expired", "cancelled",
        ],
    )  # fmt: skip
    claim = sub.add_parser("claim", help="take the lease on a handoff (prints the fencing token)")
    release = sub.add_parser("release", help="give a lease back to the queue")
    show = sub.add_parser("show", help="decrypt, verify and print a handoff")
    decide = sub.add_parser("decide", help="sign and send your decision (you must hold the lease)")
    for command in (claim, release, show, decide):
        command.add_argument("bundle_id", metavar="ID")
        command.add_argument("--queue", help="the handoff's queue (default: looked up)")
    show.add_argument("--json", action="store_true", help="the verified bundle as JSON")
    show.add_argument(
        "--reveal", action="extend", nargs="+", default=[], metavar="POINTER",
        help="reveal the masked field(s) at these JSON Pointers (audited; needs --reason)",
    )  # fmt: skip
    show.add_argument("--reason", help="why you reveal (recorded in the audit log)")
    show.add_argument("--export", metavar="FILE", help="write an export for 'baton verify'")
    decide.add_argument("decision", choices=["approve", "edit", "reject", "respond", "reroute"])
    decide.add_argument("--arguments", metavar="JSON", help="edit: the new arguments")
    decide.add_argument("--response", metavar="JSON", help="respond: the answer")
    decide.add_argument("--to-queue", metavar="QUEUE", help="reroute: the queue")
    decide.add_argument("--message", help="a note for the agent")
    for command in (listing, claim, release, show, decide):
        _inbox_options(command, defaults=False)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``baton`` console script."""
    args = _parser().parse_args(argv)
    try:
        return int(args.run(args))
    except (ConfigError, InitError, DemoFailed, ValueError) as exc:
        print(f"baton: {exc}", file=sys.stderr)
    except BatonError as exc:
        print(f"baton: {exc.code}: {exc.detail or exc.public_message}", file=sys.stderr)
    except KeysError as exc:
        print(f"baton: {exc.code}: {exc.detail}", file=sys.stderr)
    except OSError as exc:
        print(f"baton: {exc}", file=sys.stderr)
    return 1


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
