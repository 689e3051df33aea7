// The official MCP TypeScript SDK (Client + StreamableHTTPClientTransport) through the gateway.
//
//   BATON_CERT=... BATON_KEY=... BATON_CA=... BATON_SIGNING_JWK=... node mcp_client.mjs URL
//
// Connects (initialize + notifications/initialized), lists tools, calls echo and add, ends the
// session (DELETE), and prints one JSON line. Every request goes through the signed fetch
// (client certificate + RFC 9421). Any failure: the error on stderr and exit status 1.

import { Client } from "@modelcontextprotocol/sdk/client/index.js";
import { StreamableHTTPClientTransport } from "@modelcontextprotocol/sdk/client/streamableHttp.js";
import { signedFetchFromEnv } from "./signer.mjs";

function textOf(result) {
  return result.content.filter((part) => part.type === "text").map((part) => part.text).join("");
}

async function main(url) {
  const signedFetch = await signedFetchFromEnv();
  const transport = new StreamableHTTPClientTransport(new URL(url), { fetch: signedFetch });
  const client = new Client({ name: "baton-interop-js", version: "1.0.0" });
  try {
    await client.connect(transport);
    const protocolVersion = transport.protocolVersion ?? null;
    const sessionId = transport.sessionId;
    const tools = await client.listTools();
    const echo = await client.callTool({ name: "echo", arguments: { text: "from js" } });
    const add = await client.callTool({ name: "add", arguments: { a: 2, b: 3 } });
    if (echo.isError || add.isError) throw new Error(`tool error: ${JSON.stringify({ echo, add })}`);
    if (sessionId) await transport.terminateSession();
    return {
      tools: tools.tools.map((tool) => tool.name).sort(),
      echo: textOf(echo),
      add: add.structuredContent?.result ?? Number(textOf(add)),
      add_text: textOf(add),
      protocol_version: protocolVersion,
      server: client.getServerVersion()?.name ?? null,
      session_id_present: Boolean(sessionId),
      session_terminated: Boolean(sessionId) && transport.sessionId === undefined,
      keyid: signedFetch.keyid,
    };
  } finally {
    await client.close().catch(() => {});
    await signedFetch.close();
  }
}

const url = process.argv[2];
if (!url) {
  console.error("usage: node mcp_client.mjs URL");
  process.exit(2);
}
main(url).then(
  (result) => console.log(JSON.stringify(result)),
  (error) => {
    console.error(error?.stack ?? String(error));
    if (error?.cause) console.error("cause:", error.cause);
    process.exitCode = 1;
  },
);
