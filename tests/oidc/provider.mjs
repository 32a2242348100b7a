#!/usr/bin/env node
// A real OpenID Connect identity provider for the SSO tests: panva's certified `oidc-provider`,
// configured here with the clients, accounts and features our server's OIDC code talks to. It is
// started by xi-testkit (crates/testkit/src/oidc/, `TestIdp`), one per test, nothing mocked.
//
//   node tests/oidc/provider.mjs [--port N] [--keys-out DIR] [--client-secret S] [--ignore-stdin]
//
// --port N           listen on 127.0.0.1:N; 0 (the default) takes a free port.
// --keys-out DIR     write the signing keys (PKCS#8 PEM) and their kids there, so tests can craft
//                    tokens signed with the provider's own keys (expired, wrong audience, ...).
// --client-secret S  the secret of every confidential client (default `xi-test-secret`).
// --ignore-stdin     keep running when stdin closes (for starting it by hand in the background;
//                    by default it exits then, so it dies with the test that spawned it).
//
// stdout gets exactly one line, `oidc-provider listening on http://127.0.0.1:PORT` (that URL is
// the issuer, no trailing slash), once it accepts connections; everything else goes to stderr.
//
// Accounts: any login name signs in with any password (oidc-provider's devInteractions).
// alice is in group xi-admins, bob in xi-users, anyone else in none.

import { generateKeyPairSync, randomBytes } from 'node:crypto';
import { mkdirSync, writeFileSync } from 'node:fs';
import { createServer } from 'node:http';
import { join } from 'node:path';
import { parseArgs } from 'node:util';

import Provider, { errors } from 'oidc-provider';

const USAGE = 'usage: node provider.mjs [--port N] [--keys-out DIR] [--client-secret S] [--ignore-stdin]';
let args;
try {
  ({ values: args } = parseArgs({
    options: {
      port: { type: 'string', default: '0' },
      'keys-out': { type: 'string' },
      'client-secret': { type: 'string', default: 'xi-test-secret' },
      'ignore-stdin': { type: 'boolean', default: false },
      help: { type: 'boolean', default: false },
    },
    strict: true,
  }));
} catch (err) {
  console.error(`${err.message}\n${USAGE}`);
  process.exit(2);
}
if (args.help) {
  console.error(USAGE);
  process.exit(0);
}

const port = Number(args.port);
if (!Number.isInteger(port) || port < 0 || port > 65535) {
  console.error(`--port: not a port number: ${args.port}`);
  process.exit(2);
}
const clientSecret = args['client-secret'];

// oidc-provider writes its warnings (devInteractions is on, default TTL functions, ...) with
// console.info/warn; stdout is reserved for the one listening line, so send them to stderr.
console.log = console.error;
console.info = console.error;
console.warn = console.error;

/** The audience (and resource indicator) of the access tokens our API accepts. */
const API_RESOURCE = 'urn:xinference:api';

/** Group membership of the interactive accounts (the `groups` claim). */
const ACCOUNT_GROUPS = { alice: ['xi-admins'], bob: ['xi-users'] };

/** Group membership of the client-credentials (service) clients, put into their JWTs. */
const SERVICE_GROUPS = { 'xi-service': ['xi-users'], 'xi-service-admin': ['xi-admins'] };

// ---- Signing keys ---------------------------------------------------------------------------
// Fresh at every start: one key per algorithm the tests exercise. The kid is random, not the
// RFC 7638 thumbprint, so tests can't accidentally depend on a key from an earlier run.

function makeKey(type, options, alg) {
  const { privateKey } = generateKeyPairSync(type, options);
  const kid = `${type}-${randomBytes(6).toString('hex')}`;
  const jwk = { ...privateKey.export({ format: 'jwk' }), kid, alg, use: 'sig' };
  return { kid, alg, jwk, pem: privateKey.export({ type: 'pkcs8', format: 'pem' }) };
}

const keys = {
  // RSA first: oidc-provider picks the first matching key, and RS256 is the default algorithm.
  rsa: makeKey('rsa', { modulusLength: 2048 }, 'RS256'),
  ec: makeKey('ec', { namedCurve: 'P-256' }, 'ES256'),
  ed25519: makeKey('ed25519', {}, 'EdDSA'),
};

if (args['keys-out']) {
  const dir = args['keys-out'];
  mkdirSync(dir, { recursive: true });
  const index = {};
  for (const [name, key] of Object.entries(keys)) {
    writeFileSync(join(dir, `${name}.pem`), key.pem, { mode: 0o600 });
    index[name] = { kid: key.kid, alg: key.alg };
  }
  writeFileSync(join(dir, 'keys.json'), `${JSON.stringify(index, null, 2)}\n`);
}

// ---- Clients --------------------------------------------------------------------------------

/**
 * An interactive (browser and device flow) client of our server.
 *
 * `application_type: 'native'` is what makes any port acceptable: for native clients
 * oidc-provider compares loopback redirect URIs (and post-logout redirect URIs) without their
 * port (RFC 8252 section 7.3), and our server binds port 0 in the tests. The registered port
 * (1) is a placeholder. Native clients may still be confidential, so the token endpoint requires
 * the secret (client_secret_basic is registered; oidc-provider accepts client_secret_post for
 * such clients as well).
 */
function webClient(clientId, idTokenAlg) {
  return {
    client_id: clientId,
    client_secret: clientSecret,
    client_name: `xinference-rs tests (${clientId})`,
    application_type: 'native',
    token_endpoint_auth_method: 'client_secret_basic',
    grant_types: [
      'authorization_code',
      'refresh_token',
      'urn:ietf:params:oauth:grant-type:device_code',
    ],
    response_types: ['code'],
    redirect_uris: ['http://127.0.0.1:1/api/oidc/callback'],
    post_logout_redirect_uris: ['http://127.0.0.1:1/ui/'],
    id_token_signed_response_alg: idTokenAlg,
    scope: 'openid offline_access profile email groups',
  };
}

/** A machine client: client credentials only, JWT access tokens for our API. */
function serviceClient(clientId) {
  return {
    client_id: clientId,
    client_secret: clientSecret,
    token_endpoint_auth_method: 'client_secret_basic',
    grant_types: ['client_credentials'],
    response_types: [],
    redirect_uris: [],
  };
}

const clients = [
  webClient('xi-web', 'RS256'),
  webClient('xi-web-es', 'ES256'),
  webClient('xi-web-ed', 'EdDSA'),
  serviceClient('xi-service'),
  serviceClient('xi-service-admin'),
];

// ---- Accounts -------------------------------------------------------------------------------

/** Every login name is an account; its claims are derived from the name. */
async function findAccount(_ctx, id) {
  return {
    accountId: id,
    // oidc-provider keeps only the claims of the granted scopes (see `claims` below).
    async claims() {
      return {
        sub: id,
        preferred_username: id,
        name: id,
        email: `${id}@example.test`,
        email_verified: true,
        groups: ACCOUNT_GROUPS[id] ?? [],
      };
    },
  };
}

// ---- The provider ---------------------------------------------------------------------------

// Listen first, so the issuer can name the real port even when it was 0.
const server = createServer();
await new Promise((resolve, reject) => {
  server.once('error', reject);
  server.listen(port, '127.0.0.1', resolve);
});
const issuer = `http://127.0.0.1:${server.address().port}`;

const provider = new Provider(issuer, {
  clients,
  jwks: { keys: Object.values(keys).map((key) => key.jwk) },
  findAccount,

  // Which claims each scope releases. `groups` is our own scope for the `groups` claim.
  claims: {
    openid: ['sub'],
    profile: ['preferred_username', 'name'],
    email: ['email', 'email_verified'],
    groups: ['groups'],
  },
  scopes: ['openid', 'offline_access', 'profile', 'email', 'groups'],
  // By default (true) oidc-provider puts scope-released claims only into userinfo when an access
  // token is issued too; our server reads the ID token, so put them there as well.
  conformIdTokenClaims: false,

  // PKCE (S256, the only method oidc-provider accepts) for every code flow, confidential
  // clients included (the default requires it only for public clients).
  pkce: { required: () => true },

  // IdP refresh tokens whenever the client may use them, without insisting on offline_access.
  issueRefreshToken: async (_ctx, client) => client.grantTypeAllowed('refresh_token'),

  features: {
    // The built-in login and consent pages: any login, any password. Test use only.
    devInteractions: { enabled: true },
    deviceFlow: { enabled: true },
    clientCredentials: { enabled: true },
    rpInitiatedLogout: { enabled: true },
    introspection: { enabled: true },
    revocation: { enabled: true },
    resourceIndicators: {
      enabled: true,
      // The service clients get API tokens without naming the resource; interactive clients
      // get the default (an opaque token for userinfo) unless they ask for `resource`.
      defaultResource: async (_ctx, client, oneOf) =>
        oneOf ?? (client.clientId in SERVICE_GROUPS ? API_RESOURCE : undefined),
      getResourceServerInfo: async (_ctx, resource) => {
        if (resource !== API_RESOURCE) {
          throw new errors.InvalidTarget(`unknown resource ${resource}`);
        }
        return {
          scope: 'api',
          audience: API_RESOURCE,
          accessTokenTTL: 300,
          accessTokenFormat: 'jwt',
          jwt: { sign: { alg: 'RS256' } },
        };
      },
    },
  },

  // The groups claim in every access token, JWT or opaque (there: visible on introspection):
  // the account's groups for user tokens, the client's for client-credentials tokens.
  extraTokenClaims: async (_ctx, token) => {
    if (token.accountId !== undefined) {
      return { groups: ACCOUNT_GROUPS[token.accountId] ?? [] };
    }
    if (token.clientId in SERVICE_GROUPS) {
      return { groups: SERVICE_GROUPS[token.clientId] };
    }
    return undefined;
  },

  // Random per run: nothing outlives the process (the memory adapter keeps everything).
  cookies: { keys: [randomBytes(32).toString('base64url')] },

  // Short but sane: long enough for a slow CI run, short enough that nothing lingers.
  ttl: {
    AccessToken: 300,
    AuthorizationCode: 60,
    ClientCredentials: 300,
    DeviceCode: 600,
    Grant: 3600,
    IdToken: 300,
    Interaction: 600,
    RefreshToken: 3600,
    Session: 3600,
  },

  // The error page shows the error and its description, which is what a failing test needs.
  renderError: async (ctx, out) => {
    ctx.type = 'html';
    ctx.body = `<!DOCTYPE html><title>error</title><pre>${Object.entries(out)
      .map(([k, v]) => `${k}: ${String(v).replace(/[<&>]/g, (c) => `&#${c.charCodeAt(0)};`)}`)
      .join('\n')}</pre>`;
  },
});

// Tell the test why a request failed: oidc-provider swallows most errors into responses.
for (const event of [
  'authorization.error',
  'grant.error',
  'server_error',
  'end_session.error',
  'code_verification.error',
  'device_authorization.error',
  'introspection.error',
  'revocation.error',
  'userinfo.error',
]) {
  provider.on(event, (_ctx, err) => {
    const detail = [err.error_description, err.error_detail].filter(Boolean).join('; ');
    console.error(`oidc-provider: ${event}: ${err.name}: ${err.message}${detail ? ` (${detail})` : ''}`);
  });
}

server.on('request', provider.callback());
process.stdout.write(`oidc-provider listening on ${issuer}\n`);

// ---- Lifetime -------------------------------------------------------------------------------

function shutDown(why) {
  console.error(`oidc-provider: exiting (${why})`);
  server.close();
  server.closeAllConnections();
  process.exit(0);
}
process.on('SIGTERM', () => shutDown('SIGTERM'));
process.on('SIGINT', () => shutDown('SIGINT'));
if (!args['ignore-stdin']) {
  // The spawning test holds our stdin's write end: when it exits (even by SIGKILL) the pipe
  // closes and we go too, so no provider outlives its test.
  process.stdin.on('end', () => shutDown('stdin closed'));
  process.stdin.on('error', () => shutDown('stdin error'));
  process.stdin.resume();
}
