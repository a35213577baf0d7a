'use strict';
// Starts a real Backstage backend (auth plugin + guest provider) on loopback,
// signs in as the guest, prints {"token", "jwksUrl", "baseUrl"} on a line of
// its own and keeps running until stdin closes. It made
// tests/data/backstage_user_token.json (see tests/data/README.rst).
//
// Run from a folder where these are installed (npm install):
//   @backstage/backend-defaults@0.18.0 @backstage/backend-plugin-api@1.10.1
//   @backstage/plugin-auth-backend@0.30.1
//   @backstage/plugin-auth-backend-module-guest-provider@0.2.23
// Needs PostgreSQL at 127.0.0.1:5432 (user postgres, database test): the auth
// plugin needs a database, and pg needs no native build.
const net = require('node:net');
process.env.NODE_ENV = 'development';
const { createBackend } = require('@backstage/backend-defaults');
const { createServiceFactory, coreServices } = require('@backstage/backend-plugin-api');
const { ConfigReader } = require('@backstage/config');

function freePort() {
  return new Promise((resolve, reject) => {
    const srv = net.createServer();
    srv.on('error', reject);
    srv.listen(0, '127.0.0.1', () => { const { port } = srv.address(); srv.close(() => resolve(port)); });
  });
}

(async () => {
  const port = await freePort();
  const baseUrl = `http://127.0.0.1:${port}`;
  const config = {
    app: { baseUrl },
    backend: {
      baseUrl,
      listen: { host: '127.0.0.1', port },
      database: { client: 'pg', connection: { host: '127.0.0.1', port: 5432, user: 'postgres', database: 'test' }, pluginDivisionMode: 'schema' },
    },
    auth: { providers: { guest: {} }, keyStore: { provider: 'memory' } },
  };
  const backend = createBackend();
  backend.add(createServiceFactory({ service: coreServices.rootConfig, deps: {}, factory: () => new ConfigReader(config) }));
  backend.add(require('@backstage/plugin-auth-backend'));
  backend.add(require('@backstage/plugin-auth-backend-module-guest-provider'));
  await backend.start();
  const res = await fetch(`${baseUrl}/api/auth/guest/refresh`, { headers: { 'x-requested-with': 'XMLHttpRequest' } });
  const body = await res.json();
  if (!res.ok) { console.error(JSON.stringify(body)); process.exit(1); }
  console.log(JSON.stringify({ token: body.backstageIdentity.token, baseUrl, jwksUrl: `${baseUrl}/api/auth/.well-known/jwks.json` }));
  process.stdin.on('end', async () => { await backend.stop(); process.exit(0); });
  process.stdin.resume();
})().catch(err => { console.error(err.stack || String(err)); process.exit(1); });
