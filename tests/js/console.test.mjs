// The console in headless Chromium against a real rowcast: opened with ?token=, it connects
// (green dot), shows an UPDATE made in PostgreSQL, turns yellow while rowcast is stopped and
// green again when it is back; webhook API errors are shown; a screenshot is saved.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { chromium } from 'playwright-core';

const env = (name) => {
  const v = process.env[name];
  if (!v) throw new Error(`${name} is not set: run through \`cargo test --test it console_in_chromium\``);
  return v;
};

function chromiumPath() {
  if (process.env.CHROMIUM_PATH) return process.env.CHROMIUM_PATH;
  for (const name of ['chromium', 'chromium-browser']) {
    try {
      const p = execFileSync('sh', ['-c', `command -v ${name}`], { encoding: 'utf8' }).trim();
      if (p && existsSync(p)) return p;
    } catch {
      // not on PATH
    }
  }
  throw new Error('Chromium is not installed; the console test drives it headless. Install it with `apt-get update && apt-get install -y chromium` (Debian, as root or with sudo), or set CHROMIUM_PATH to a Chromium or Chrome binary');
}

async function control(method, path, body) {
  const res = await fetch(env('ROWCAST_CONTROL') + path, { method, headers: { 'content-type': 'application/json' }, body: body && JSON.stringify(body) });
  const text = await res.text();
  if (!res.ok) throw new Error(`control ${path}: ${res.status} ${text}`);
  return text;
}

test('console: connect from ?token=, live UPDATE, yellow while rowcast is down, green when back', async () => {
  const browser = await chromium.launch({
    executablePath: chromiumPath(),
    args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run', '--disable-background-networking', '--disable-component-update', '--disable-sync'],
  });
  const page = await browser.newPage({ viewport: { width: 1280, height: 900 } });
  const logs = [];
  page.on('console', (m) => logs.push(`${m.type()}: ${m.text()}`));
  page.on('pageerror', (e) => logs.push(`pageerror: ${e.message}`));
  const dot = page.locator('#dot');
  const shot = join(env('ARTIFACTS_DIR'), 'console.png');
  try {
    const token = await control('GET', '/token?sub=1&role=agent&ttl=3600');
    await page.goto(`${env('ROWCAST_URL')}/?token=${token}`);
    await page.waitForSelector('#dot[data-state="connected"]', { timeout: 10000 });
    assert.equal(await dot.evaluate((el) => getComputedStyle(el).backgroundColor), 'rgb(31, 157, 85)', 'green when connected');
    assert.equal(await page.inputValue('#token'), token, 'the token field is prefilled');
    await page.waitForFunction(() => document.querySelector('#joined').textContent.includes('tickets'));

    await control('POST', '/sql', { sql: "UPDATE tickets SET subject = 'Seen in the browser', status = 'pending' WHERE id = (SELECT min(id) FROM tickets)" });
    const row = page.locator('#events li', { hasText: 'Seen in the browser' });
    await row.first().waitFor({ timeout: 10000 });
    assert.equal(await row.first().getAttribute('data-event'), 'ticket.update');

    // Without the webhook API (or on any server error) the panel says so.
    await page.waitForFunction(() => document.querySelector('#webhook-error').textContent.length > 0 || document.querySelector('#webhook-info').textContent.length > 0, null, { timeout: 10000 });

    await control('POST', '/stop');
    await page.waitForSelector('#dot:is([data-state="disconnected"],[data-state="connecting"])', { timeout: 10000 });
    assert.equal(await dot.evaluate((el) => getComputedStyle(el).backgroundColor), 'rgb(227, 179, 65)', 'yellow while rowcast is down');
    await page.screenshot({ path: join(env('ARTIFACTS_DIR'), 'console-disconnected.png'), fullPage: true });

    await control('POST', '/sql', { sql: "INSERT INTO tickets (subject, requester_id) VALUES ('Committed while down', 3)" });
    await control('POST', '/start');
    await page.waitForSelector('#dot[data-state="connected"]', { timeout: 15000 });
    assert.equal(await dot.evaluate((el) => getComputedStyle(el).backgroundColor), 'rgb(31, 157, 85)', 'green again');
    await page.locator('#events li', { hasText: 'Committed while down' }).first().waitFor({ timeout: 10000 });
    await page.screenshot({ path: shot, fullPage: true });
  } catch (err) {
    await page.screenshot({ path: shot, fullPage: true }).catch(() => {});
    err.message += `\nbrowser console:\n${logs.join('\n')}`;
    throw err;
  } finally {
    await browser.close();
  }
});
