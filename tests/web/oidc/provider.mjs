// A real OpenID Provider (panva/oidc-provider) for tests/gateway/web/test_oidc.py.
//
//   node provider.mjs PORT CERT_FILE KEY_FILE
//
// Environment: OIDC_CLIENT_ID, OIDC_CLIENT_SECRET, OIDC_REDIRECT_URIS (space
// separated) and OIDC_JWKS_FILE (the provider's private signing JWKS, each key
// with kid, alg and use). The secret comes through the environment, never
// argv, so it does not show in process listings.
//
// Serves https://127.0.0.1:PORT over TLS with the given certificate and key,
// one confidential client (authorization code, client_secret_basic, PKCE
// required), accounts for any login name (sub = the name typed, email =
// name@example.com when the name has no "@"), and the provider's built-in
// development login and consent pages. Prints "ready" on stdout when it
// listens.
//
// The signing keys come from the test rather than node:crypto's
// generateKeyPairSync: on Node 20 that call can deadlock in a garbage
// collection during the JWK export (a KeyGenJob destructor waits on a mutex
// its own thread holds), which hung about one start in twenty.

import { randomBytes } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { createServer } from 'node:https';

import Provider from 'oidc-provider';

const [port, certFile, keyFile] = process.argv.slice(2);
const clientId = process.env.OIDC_CLIENT_ID;
const clientSecret = process.env.OIDC_CLIENT_SECRET;
const redirectUris = (process.env.OIDC_REDIRECT_URIS ?? '').split(' ').filter(Boolean);
const jwksFile = process.env.OIDC_JWKS_FILE;
if (!port || !certFile || !keyFile || !clientId || !clientSecret || redirectUris.length === 0
    || !jwksFile) {
  process.stderr.write('usage: OIDC_CLIENT_ID=.. OIDC_CLIENT_SECRET=.. OIDC_REDIRECT_URIS=.. '
    + 'OIDC_JWKS_FILE=.. node provider.mjs PORT CERT_FILE KEY_FILE\n');
  process.exit(2);
}

const issuer = `https://127.0.0.1:${port}`;
const provider = new Provider(issuer, {
  clients: [{
    client_id: clientId,
    client_secret: clientSecret,
    redirect_uris: redirectUris,
    grant_types: ['authorization_code'],
    response_types: ['code'],
    token_endpoint_auth_method: 'client_secret_basic',
  }],
  jwks: JSON.parse(readFileSync(jwksFile, 'utf8')),
  cookies: { keys: [randomBytes(32).toString('hex')] },
  pkce: { required: () => true },
  features: { devInteractions: { enabled: true } },
  claims: { openid: ['sub'], email: ['email', 'email_verified'] },
  async findAccount(ctx, id) {
    return {
      accountId: id,
      async claims() {
        const email = id.includes('@') ? id : `${id}@example.com`;
        return { sub: id, email, email_verified: true };
      },
    };
  },
});

const server = createServer({
  cert: readFileSync(certFile),
  key: readFileSync(keyFile),
  minVersion: 'TLSv1.2',
}, provider.callback());

server.listen(Number(port), '127.0.0.1', () => {
  process.stdout.write('ready\n');
});

for (const signal of ['SIGTERM', 'SIGINT']) {
  process.on(signal, () => server.close(() => process.exit(0)));
}
