// Exercises makeSignedFetch against a server that verifies with keys.httpsig.verify
// (tests/interop/test_js_sdks.py starts it). Prints one JSON line per case:
//   {"case": name, "status": HTTP status, "server": what the verifier said}
// or, for a request the signer must refuse before sending, {"case", "refused": message}.
//
//   BATON_CERT=... BATON_KEY=... BATON_CA=... BATON_SIGNING_JWK=... node signer_probe.mjs BASE_URL

import { signedFetchFromEnv } from "./signer.mjs";

async function send(fetchImpl, name, url, init) {
  try {
    const response = await fetchImpl(url, init);
    const server = await response.json();
    return { case: name, status: response.status, server };
  } catch (error) {
    if (error instanceof TypeError && error.message.startsWith("signed fetch:")) {
      return { case: name, refused: error.message };
    }
    throw error;
  }
}

async function main(base) {
  const fetchImpl = await signedFetchFromEnv();
  const bytes = new Uint8Array([0, 1, 2, 0xfe, 0xff, 0x7b, 0x0a]);
  const stream = new ReadableStream({
    start(controller) {
      controller.enqueue(new TextEncoder().encode("never sent"));
      controller.close();
    },
  });
  const cases = [
    ["get-query", `${base}/probe/a%2Fb?q=a%20b&x=%C3%A9`, {}],
    ["string-body", `${base}/probe/mcp`, {
      method: "post",
      headers: { "content-type": "application/json", "Mcp-Method": "tools/call", "MCP-Name": "echo" },
      body: JSON.stringify({ text: "héllo from js" }),
    }],
    ["uint8array-body", `${base}/probe/bytes`, {
      method: "POST",
      headers: new Headers({ "A2A-Version": "1.0", "content-type": "application/octet-stream" }),
      body: bytes,
    }],
    ["buffer-view-body", `${base}/probe/view`, {
      method: "POST",
      body: Buffer.from("a slice of a bigger buffer").subarray(2, 7),
    }],
    ["arraybuffer-body", `${base}/probe/arraybuffer`, { method: "PUT", body: bytes.buffer }],
    ["empty-body", `${base}/probe/empty`, { method: "POST", body: "" }],
    ["stale-signature-replaced", `${base}/probe/replaced`, {
      method: "DELETE",
      headers: { signature: "baton=:AAAA:", "signature-input": 'baton=("@method")', "content-digest": "sha-256=:AAAA:" },
    }],
    ["stream-body", `${base}/probe/stream`, { method: "POST", body: stream, duplex: "half" }],
    ["plain-http", base.replace("https:", "http:") + "/probe/http", {}],
  ];
  try {
    for (const [name, url, init] of cases) {
      console.log(JSON.stringify(await send(fetchImpl, name, url, init)));
    }
  } finally {
    await fetchImpl.close();
  }
}

main(process.argv[2]).catch((error) => {
  console.error(error?.stack ?? String(error));
  if (error?.cause) console.error("cause:", error.cause);
  process.exitCode = 1;
});
