// The official A2A JavaScript SDK (ClientFactory + Client, A2A v1.0) through the gateway.
//
//   BATON_CERT=... BATON_KEY=... BATON_CA=... BATON_SIGNING_JWK=... \
//     node a2a_client.mjs BASE_URL [JSONRPC|HTTP+JSON]
//
// Fetches the agent card (GET BASE_URL/.well-known/agent-card.json), builds a client for the
// chosen binding from the card's interfaces (which the gateway rewrote to point at itself),
// sends "from js" (non-streaming), then streams one send. Prints two JSON lines:
//   {"kind":"send", card..., task_id, state, artifact_text}
//   {"kind":"stream", events: [...payload kinds], final_state, artifact_text}
// Every request goes through the signed fetch. Any failure: the error on stderr, exit status 1.
//
// SDK 1.3.0 note: DefaultAgentCardResolver resolves its path with new URL(path, base), so an
// absolute "/.well-known/agent-card.json" would drop the gateway's /u/<upstream> prefix; the
// full card URL with an empty path is the documented way round it.

import { randomUUID } from "node:crypto";
import { Role, TaskState } from "@a2a-js/sdk";
import {
  ClientFactory,
  DefaultAgentCardResolver,
  JsonRpcTransportFactory,
  RestTransportFactory,
} from "@a2a-js/sdk/client";
import { signedFetchFromEnv } from "./signer.mjs";

const TRANSPORTS = { JSONRPC: JsonRpcTransportFactory, "HTTP+JSON": RestTransportFactory };

function userMessage(text) {
  return {
    messageId: randomUUID(),
    contextId: "",
    taskId: "",
    role: Role.ROLE_USER,
    parts: [{ content: { $case: "text", value: text }, metadata: undefined, filename: "", mediaType: "" }],
    metadata: undefined,
    extensions: [],
    referenceTaskIds: [],
  };
}

function request(text) {
  return { tenant: "", message: userMessage(text), configuration: undefined, metadata: undefined };
}

function partsText(parts) {
  return (parts ?? [])
    .filter((part) => part.content?.$case === "text")
    .map((part) => part.content.value)
    .join("");
}

function stateName(state) {
  return TaskState[state] ?? String(state);
}

async function main(baseUrl, binding) {
  const Factory = TRANSPORTS[binding];
  if (!Factory) throw new Error(`unknown binding ${binding}; use one of ${Object.keys(TRANSPORTS)}`);
  const fetchImpl = await signedFetchFromEnv();
  try {
    const factory = new ClientFactory({
      transports: [new Factory({ fetchImpl })],
      cardResolver: new DefaultAgentCardResolver({ fetchImpl }),
    });
    const cardUrl = `${baseUrl.replace(/\/+$/, "")}/.well-known/agent-card.json`;
    const client = await factory.createFromUrl(cardUrl, "");
    const card = await client.getAgentCard();

    const result = await client.sendMessage(request("from js"));
    if (!("status" in result)) throw new Error(`expected a Task, got ${JSON.stringify(result)}`);
    console.log(
      JSON.stringify({
        kind: "send",
        binding: client.transport.protocolName,
        protocol_version: client.protocolVersion,
        card_name: card.name,
        card_urls: card.supportedInterfaces.map((i) => `${i.protocolBinding} ${i.url}`),
        task_id: result.id,
        state: stateName(result.status?.state),
        artifact_text: (result.artifacts ?? []).map((a) => partsText(a.parts)).join(""),
      }),
    );

    const events = [];
    let finalState = null;
    let streamed = "";
    let streamTask = null;
    for await (const event of client.sendMessageStream(request("streamed from js"))) {
      const kind = event.payload?.$case ?? "none";
      events.push(kind);
      const value = event.payload?.value;
      if (kind === "task") {
        streamTask = value.id;
        finalState = stateName(value.status?.state);
      } else if (kind === "statusUpdate") {
        streamTask ??= value.taskId;
        finalState = stateName(value.status?.state);
      } else if (kind === "artifactUpdate") {
        streamed += partsText(value.artifact?.parts);
      }
    }
    console.log(
      JSON.stringify({
        kind: "stream",
        events,
        task_id: streamTask,
        final_state: finalState,
        artifact_text: streamed,
      }),
    );
  } finally {
    await fetchImpl.close();
  }
}

const [baseUrl, binding = "JSONRPC"] = process.argv.slice(2);
if (!baseUrl) {
  console.error("usage: node a2a_client.mjs BASE_URL [JSONRPC|HTTP+JSON]");
  process.exit(2);
}
main(baseUrl, binding).catch((error) => {
  console.error(error?.stack ?? String(error));
  if (error?.cause) console.error("cause:", error.cause);
  process.exitCode = 1;
});
