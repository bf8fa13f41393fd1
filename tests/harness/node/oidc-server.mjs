// An OpenID Connect provider for the single sign-on tests (tests/harness/oidc.py):
// panva's oidc-provider, pinned in package-lock.json, on loopback over plain http.
//
//   OIDC_CLIENT_SECRET=... node oidc-server.mjs --port 8123 --client-id strongroom \
//       --redirect-uri http://127.0.0.1:8000/login/sso/callback/ --accounts accounts.json
//
// - The issuer is http://127.0.0.1:<port>; discovery, JWKS, token and userinfo
//   are the library's own (/.well-known/openid-configuration, /jwks, /token, /me).
// - One confidential client (client_secret_basic). Its secret comes from the
//   environment, not the command line, which other local users can read.
// - ID tokens are signed RS256 with a key generated at start.
// - People sign in on a page of this server with a user name and a password,
//   checked against the accounts file, which is read again at every sign-in
//   and every claims lookup: a test changes someone's groups by rewriting it.
//   {"users": [{"username", "password", "sub", "email", "groups": [...]}]}
// - Consent is implied for the one client (it is the organisation's own app).
// - GET /_test/issued lists the authorization codes and access tokens issued so
//   far, so that tests can look for them where they must not be.
// It prints "listening <issuer>" once it accepts connections.

import { generateKeyPairSync, randomBytes } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { createServer } from 'node:http';
import { parseArgs } from 'node:util';

import Provider from 'oidc-provider';

const { values: args } = parseArgs({
  options: {
    port: { type: 'string' },
    'client-id': { type: 'string', default: 'strongroom' },
    'redirect-uri': { type: 'string', multiple: true },
    accounts: { type: 'string' },
  },
});
const clientSecret = process.env.OIDC_CLIENT_SECRET;
if (!args.port || !args.accounts || !args['redirect-uri'] || !clientSecret) {
  console.error('usage: OIDC_CLIENT_SECRET=... oidc-server.mjs --port N --accounts FILE --redirect-uri URL [--client-id ID]');
  process.exit(2);
}
const issuer = `http://127.0.0.1:${args.port}`;

function users() {
  return JSON.parse(readFileSync(args.accounts, 'utf8')).users;
}

const { privateKey } = generateKeyPairSync('rsa', { modulusLength: 2048 });
const signingKey = { ...privateKey.export({ format: 'jwk' }), kid: randomBytes(8).toString('hex'), alg: 'RS256', use: 'sig' };

const provider = new Provider(issuer, {
  clients: [{
    client_id: args['client-id'],
    client_secret: clientSecret,
    redirect_uris: args['redirect-uri'],
    grant_types: ['authorization_code'],
    response_types: ['code'],
    token_endpoint_auth_method: 'client_secret_basic',
    id_token_signed_response_alg: 'RS256',
  }],
  jwks: { keys: [signingKey] },
  cookies: { keys: [randomBytes(32).toString('hex')] },
  claims: {
    openid: ['sub'],
    email: ['email', 'email_verified'],
    profile: ['preferred_username', 'name'],
    groups: ['groups'],
  },
  async findAccount(ctx, sub) {
    const user = users().find((candidate) => candidate.sub === sub);
    if (!user) return undefined;
    return {
      accountId: sub,
      async claims() {
        return {
          sub,
          email: user.email,
          email_verified: true,
          preferred_username: user.username,
          name: user.name || user.username,
          groups: user.groups || [],
        };
      },
    };
  },
  // The organisation's own app: whatever it asks for is granted without a consent page.
  async loadExistingGrant(ctx) {
    const { oidc } = ctx;
    const grantId = oidc.result?.consent?.grantId || oidc.session.grantIdFor(oidc.client.clientId);
    const grant = grantId
      ? await oidc.provider.Grant.find(grantId)
      : new oidc.provider.Grant({ clientId: oidc.client.clientId, accountId: oidc.account.accountId });
    grant.addOIDCScope(oidc.params.scope);
    await grant.save();
    return grant;
  },
  features: { devInteractions: { enabled: false } },
  interactions: { url: (ctx, interaction) => `/interaction/${interaction.uid}` },
  renderError(ctx, out) {
    ctx.type = 'html';
    ctx.body = page('Sign-in error', `<p id="error">${escape(out.error)}: ${escape(out.error_description || '')}</p>`);
  },
});

const issued = { codes: [], access_tokens: [] };
// An opaque token's jti is the token itself.
provider.on('authorization_code.saved', (code) => issued.codes.push(code.jti));
provider.on('access_token.saved', (token) => issued.access_tokens.push(token.jti));

function escape(text) {
  return String(text).replace(/[&<>"']/g, (c) => `&#${c.charCodeAt(0)};`);
}

function page(title, body) {
  return `<!doctype html><html><head><meta charset="utf-8"><title>${escape(title)}</title></head>`
    + `<body><h1>Test identity provider</h1>${body}</body></html>`;
}

function loginForm(uid, error) {
  return page('Sign in at the test identity provider', `
    ${error ? `<p id="error">${escape(error)}</p>` : ''}
    <form method="post" action="/interaction/${escape(uid)}/login">
      <label>User name <input name="username" id="provider-username" autocomplete="off"></label>
      <label>Password <input name="password" id="provider-password" type="password"></label>
      <button type="submit" id="provider-sign-in">Sign in at the provider</button>
    </form>`);
}

async function body(req) {
  const chunks = [];
  for await (const chunk of req) chunks.push(chunk);
  return new URLSearchParams(Buffer.concat(chunks).toString('utf8'));
}

function send(res, status, type, text) {
  res.writeHead(status, { 'content-type': type, 'cache-control': 'no-store' });
  res.end(text);
}

async function interaction(req, res, uid, action) {
  const details = await provider.interactionDetails(req, res);
  if (details.uid !== uid || details.prompt.name !== 'login') {
    return send(res, 400, 'text/plain', `unexpected interaction ${details.prompt.name}`);
  }
  if (req.method === 'GET' && !action) {
    return send(res, 200, 'text/html', loginForm(uid));
  }
  if (req.method === 'POST' && action === 'login') {
    const form = await body(req);
    const user = users().find((candidate) => candidate.username === form.get('username'));
    if (!user || user.password !== form.get('password')) {
      return send(res, 200, 'text/html', loginForm(uid, 'Wrong user name or password.'));
    }
    return provider.interactionFinished(req, res, { login: { accountId: user.sub } }, { mergeWithLastSubmission: false });
  }
  return send(res, 405, 'text/plain', 'method not allowed');
}

const handleProtocol = provider.callback();
const server = createServer(async (req, res) => {
  try {
    const url = new URL(req.url, issuer);
    const match = url.pathname.match(/^\/interaction\/([\w-]+)(?:\/(login))?$/);
    if (match) return await interaction(req, res, match[1], match[2]);
    if (url.pathname === '/_test/issued') return send(res, 200, 'application/json', JSON.stringify(issued));
    return handleProtocol(req, res);
  } catch (error) {
    console.error(error);
    if (!res.headersSent) send(res, 500, 'text/plain', String(error.message || error));
    return undefined;
  }
});
server.listen(Number(args.port), '127.0.0.1', () => console.log(`listening ${issuer}`));
