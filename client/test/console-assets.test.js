// The console and the client modules are served by rowcast, byte for byte what is in the
// repository (so the embedded copy cannot drift), with the right content types.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readdir, readFile } from 'node:fs/promises';

import { ROWCAST_URL } from './helpers.js';

const clientDir = new URL('../', import.meta.url);

test('GET / serves the console page', async () => {
  const res = await fetch(`${ROWCAST_URL()}/`);
  assert.equal(res.status, 200);
  assert.match(res.headers.get('content-type'), /text\/html/);
  const html = await res.text();
  assert.match(html, /id="dot"/);
  assert.match(html, /console\/console\.js/);
});

test('every client module is served at /client/<file>, identical to the package', async () => {
  const files = (await readdir(clientDir)).filter((f) => f.endsWith('.js'));
  assert.ok(files.includes('index.js') && files.includes('webhooks.js'));
  for (const f of files.filter((f) => f !== 'react.js')) {
    const res = await fetch(`${ROWCAST_URL()}/client/${f}`);
    assert.equal(res.status, 200, `/client/${f} is not embedded: add it to src/console.rs`);
    assert.match(res.headers.get('content-type'), /javascript/);
    assert.equal(await res.text(), await readFile(new URL(f, clientDir), 'utf8'), `/client/${f} differs from client/${f}: rebuild rowcast`);
  }
});

test('console assets are served; unknown ones answer a JSON 404', async () => {
  for (const [f, type] of [['console.js', /javascript/], ['console.css', /css/]]) {
    const res = await fetch(`${ROWCAST_URL()}/console/${f}`);
    assert.equal(res.status, 200);
    assert.match(res.headers.get('content-type'), type);
    assert.equal(await res.text(), await readFile(new URL(`../console/${f}`, clientDir), 'utf8'));
  }
  const res = await fetch(`${ROWCAST_URL()}/client/nope.js`);
  assert.equal(res.status, 404);
  assert.equal((await res.json()).error, 'not_found');
});
