// The dashboard renders on the server and becomes interactive once the wasm hydrates it.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { startServer } from './support/server.mjs';
import { launchBrowser } from './support/browser.mjs';

let server;
let browser;

before(async () => {
  server = await startServer();
  browser = await launchBrowser();
});

after(async () => {
  await browser?.close();
  await server?.stop();
});

test('the server renders the apps page without JavaScript', async () => {
  const res = await fetch(server.url);
  assert.equal(res.status, 200);
  const html = await res.text();
  assert.match(html, /<h1[^>]*>Apps(<!>)?<\/h1>/);
  // No cluster here: the page says so where the apps would be.
  assert.match(html, /FluxUp is not connected to Kubernetes/);
  assert.equal(res.headers.get('x-content-type-options'), 'nosniff');
});

test('the page hydrates: the theme switch works only after the wasm has loaded', async () => {
  const page = await browser.newPage();
  const errors = [];
  page.on('pageerror', (e) => errors.push(e.message));
  page.on('console', (m) => m.type() === 'error' && errors.push(m.text()));

  // Load the HTML but block the wasm: the button is there and does nothing.
  await page.route('**/*.wasm', (route) => route.abort());
  await page.goto(server.url);
  const toggle = page.locator('#theme-toggle');
  await toggle.click();
  assert.equal(await toggle.textContent(), 'Theme: system', 'no wasm, no effect');
  await page.unroute('**/*.wasm');

  // With the wasm, hydration wires the same button up.
  errors.length = 0;
  await page.goto(server.url);
  await page.waitForSelector('[data-hydrated="true"]', { timeout: 15_000 });
  await toggle.click();
  assert.equal(await toggle.textContent(), 'Theme: dark');
  assert.ok(await page.locator('div.dark').count(), 'the dark class is applied');

  // The header shows FluxUp's version (the dashboard tests cover server functions with a cluster).
  const version = await page.locator('#server-version').textContent();
  assert.match(version, /^v\d+\.\d+\.\d+/);
  assert.deepEqual(errors, [], 'no errors in the browser console');
  await page.close();
});

test('health endpoints answer', async () => {
  assert.equal((await fetch(`${server.url}/healthz`)).status, 200);
  assert.equal((await fetch(`${server.url}/readyz`)).status, 200);
});
