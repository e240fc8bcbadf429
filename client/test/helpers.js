// Shared by the node tests: the rowcast under test, its control plane, and waits that fail
// with a message instead of hanging.

import { createRequire } from 'node:module';

/** Loads an npm package installed for the tests (tests/js/node_modules). */
export function need(name) {
  const require = createRequire(new URL('../../tests/js/package.json', import.meta.url));
  try {
    return require(name);
  } catch (err) {
    throw new Error(`npm package ${name} is missing: run these tests through \`cargo test --test it client\` (it installs tests/js/node_modules), or \`npm ci\` in tests/js (${err.message})`);
  }
}

function env(name) {
  const v = process.env[name];
  if (!v) throw new Error(`${name} is not set: run these tests through \`cargo test --test it client\``);
  return v;
}

export const ROWCAST_URL = () => env('ROWCAST_URL');
const CONTROL = () => env('ROWCAST_CONTROL');

async function call(method, path, body) {
  const res = await fetch(CONTROL() + path, {
    method,
    headers: body ? { 'content-type': 'application/json' } : {},
    body: body ? JSON.stringify(body) : undefined,
  });
  const text = await res.text();
  if (!res.ok) throw new Error(`control ${path} failed: ${res.status} ${text}`);
  return text;
}

/** Runs SQL statements in the test database. */
export const sql = (statement) => call('POST', '/sql', { sql: statement });
/** Runs a query (or DML with RETURNING) and returns its rows as objects. */
export const query = async (statement) => JSON.parse(await call('POST', '/query', { sql: statement }));
/** A token signed by the server under test. */
export const token = (sub, role, ttl = 3600) => call('GET', `/token?sub=${encodeURIComponent(sub)}&role=${encodeURIComponent(role)}&ttl=${ttl}`);
/** Stops rowcast (graceful: sessions get close 1001). */
export const stopRowcast = () => call('POST', '/stop');
/** Starts rowcast again on the same address. */
export const startRowcast = () => call('POST', '/start');

/** Waits until `check()` returns a truthy value; fails naming `what` after `ms`. */
export async function waitFor(what, check, ms = 10000) {
  const deadline = Date.now() + ms;
  for (;;) {
    const v = await check();
    if (v) return v;
    if (Date.now() > deadline) throw new Error(`timed out after ${ms} ms waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 25));
  }
}

export const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
