#!/usr/bin/env node
/*
 * A real Backstage backend for tests/test_live_backstage.py.
 *
 *   BS_LIVE_DIR=/tmp/bs-live BS_LIVE_PORT=7007 BS_LIVE_FLASK_URL=http://127.0.0.1:5000 \
 *     node tests/live_backstage/index.js
 *
 * The Backstage packages are loaded from $BS_LIVE_DIR (default /tmp/bs-live),
 * where the test installs package.json's exact pins; nothing from Backstage is
 * kept in this folder. Features: the auth backend with the guest provider,
 * the permission backend with LivePolicy below, the catalog with the static
 * entities of catalog-entities.yaml, and `nodeprobe`, a plugin that calls the
 * Flask app with plugin request tokens.
 */
'use strict';

const path = require('node:path');
const { createRequire } = require('node:module');

const HERE = __dirname;
const DIR = process.env.BS_LIVE_DIR || '/tmp/bs-live';
const load = createRequire(path.join(DIR, 'package.json'));
for (const name of ['BS_LIVE_PORT', 'BS_LIVE_FLASK_URL']) {
  if (!process.env[name]) {
    console.error(`index.js: set ${name}`);
    process.exit(2);
  }
}
process.env.BS_LIVE_HERE = HERE;
// The config loader collects config schemas from the package.json found from the cwd.
process.chdir(DIR);
// Backstage's config loader reads --config from argv.
process.argv.push('--config', path.join(HERE, 'app-config.yaml'));

const { createBackend } = load('@backstage/backend-defaults');
const {
  coreServices,
  createBackendModule,
  createBackendPlugin,
} = load('@backstage/backend-plugin-api');
const { AuthorizeResult, isResourcePermission } = load('@backstage/plugin-permission-common');
const { policyExtensionPoint } = load('@backstage/plugin-permission-node/alpha');
const express = createRequire(load.resolve('@backstage/backend-defaults'))('express');

/** The organisation's policy: one denial, one conditional decision, the rest allowed. */
class LivePolicy {
  async handle(request, user) {
    const { permission } = request;
    if (permission.name === 'search.query.restricted') {
      return { result: AuthorizeResult.DENY };
    }
    if (
      permission.name === 'livecheck.document.read' &&
      isResourcePermission(permission, 'livecheck-document')
    ) {
      // Public documents, or those owned by the user or their groups.
      return {
        result: AuthorizeResult.CONDITIONAL,
        pluginId: 'livecheck',
        resourceType: 'livecheck-document',
        conditions: {
          anyOf: [
            {
              rule: 'HAS_TAG',
              resourceType: 'livecheck-document',
              params: { tag: 'public' },
            },
            {
              rule: 'IS_OWNED_BY',
              resourceType: 'livecheck-document',
              params: { owners: user?.info.ownershipEntityRefs ?? [] },
            },
          ],
        },
      };
    }
    return { result: AuthorizeResult.ALLOW };
  }
}

const livePolicyModule = createBackendModule({
  pluginId: 'permission',
  moduleId: 'live-policy',
  register(reg) {
    reg.registerInit({
      deps: { policy: policyExtensionPoint },
      async init({ policy }) {
        policy.setPolicy(new LivePolicy());
      },
    });
  },
});

// The Flask plugins nodeprobe may call, and the paths it may ask for.
const FLASK_TARGETS = new Set(['app', 'search', 'techdocs', 'livecheck']);
const SAFE_PATH = /^\/[A-Za-z0-9/_.?=&-]*$/;

/**
 * GET /api/nodeprobe/whoami: the caller's principal, as this backend sees it.
 * GET /api/nodeprobe/call?target=app&path=/whoami[&as=service]: calls a Flask
 * plugin on behalf of the caller (or as nodeprobe itself) and reports its answer.
 */
const nodeprobePlugin = createBackendPlugin({
  pluginId: 'nodeprobe',
  register(env) {
    env.registerInit({
      deps: {
        httpRouter: coreServices.httpRouter,
        auth: coreServices.auth,
        httpAuth: coreServices.httpAuth,
        discovery: coreServices.discovery,
      },
      async init({ httpRouter, auth, httpAuth, discovery }) {
        const router = express.Router();
        router.get('/whoami', async (req, res) => {
          const credentials = await httpAuth.credentials(req, { allow: ['user', 'service'] });
          res.json({ principal: credentials.principal });
        });
        router.get('/call', async (req, res) => {
          const credentials = await httpAuth.credentials(req, { allow: ['user', 'service'] });
          const target = String(req.query.target ?? '');
          const targetPath = String(req.query.path ?? '');
          if (!FLASK_TARGETS.has(target) || !SAFE_PATH.test(targetPath) || targetPath.includes('..')) {
            res.status(400).json({ error: { name: 'InputError', message: 'bad target or path' } });
            return;
          }
          const onBehalfOf =
            req.query.as === 'service' ? await auth.getOwnServiceCredentials() : credentials;
          const { token } = await auth.getPluginRequestToken({ onBehalfOf, targetPluginId: target });
          const url = `${await discovery.getBaseUrl(target)}${targetPath}`;
          let status;
          let body;
          try {
            const response = await fetch(url, {
              headers: { authorization: `Bearer ${token}` },
              signal: AbortSignal.timeout(10000),
            });
            status = response.status;
            const text = await response.text();
            try {
              body = JSON.parse(text);
            } catch {
              body = text.slice(0, 2000);
            }
          } catch (error) {
            res.status(502).json({ error: { name: 'ResponseError', message: String(error) } });
            return;
          }
          res.json({ url, status, body });
        });
        httpRouter.use(router);
      },
    });
  },
});

const backend = createBackend();
backend.add(load('@backstage/plugin-auth-backend').default);
backend.add(load('@backstage/plugin-auth-backend-module-guest-provider').default);
backend.add(load('@backstage/plugin-permission-backend').default);
backend.add(livePolicyModule);
backend.add(load('@backstage/plugin-catalog-backend').default);
backend.add(nodeprobePlugin);
backend.start().then(
  () => console.log(`live-backstage: started on ${process.env.BS_LIVE_PORT}`),
  (error) => {
    console.error(`BACKEND-START-ERROR: ${error?.stack ?? error}`);
    process.exit(4);
  },
);
for (const signal of ['SIGTERM', 'SIGINT']) {
  process.once(signal, () => {
    backend.stop().finally(() => process.exit(0));
    setTimeout(() => process.exit(0), 5000).unref();
  });
}
