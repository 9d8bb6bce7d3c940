// The live feed catches up: a page showing an operation gets the change it missed while FluxUp
// was restarting, without a reload and without waiting for a further change.
//
// Needs the full-profile test sandbox up (scripts/test starts it). The server runs without its
// controllers (after they resolved the app once), so that only this test moves the request: it
// writes the request's status itself, as the bench does.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { startServer } from './support/server.mjs';
import { launchBrowser } from './support/browser.mjs';
import { kubectl, outboundAllow, resolvedDemoApp, sandbox } from './support/sandbox.mjs';

const NS = 'webapp';
const APP = 'webapp-live';

let server;
let browser;
const env = { KUBECONFIG: sandbox.KUBECONFIG, FLUXUP_CONTROLLERS: 'false', FLUXUP_OUTBOUND_ALLOW: outboundAllow };

before(async () => {
  await resolvedDemoApp(APP);
  server = await startServer(env);
  browser = await launchBrowser();
});

after(async () => {
  await browser?.close();
  await server?.stop();
});

/** Writes an UpgradeRequest's status as its controller would. */
function setStatus(name, status) {
  kubectl(['patch', 'upgraderequest', '-n', NS, name, '--subresource=status', '--type=merge',
    '-p', JSON.stringify({ status })]);
}

test('a change made while FluxUp restarts reaches the open page once it reconnects', async () => {
  const page = await browser.newPage();
  const errors = [];
  page.on('pageerror', (e) => errors.push(e.message));
  await page.goto(`${server.url}/apps/${NS}/${APP}`);
  await page.waitForSelector('[data-hydrated="true"]');
  await page.click('#dry-run');
  const section = page.locator('section[data-operation]');
  await section.waitFor();
  const name = await section.getAttribute('data-operation');

  // Live while connected.
  setStatus(name, { phase: 'Preflight', message: 'checking' });
  await page.waitForFunction(() => document.querySelector('section[data-operation]')?.dataset.phase === 'Preflight');

  // FluxUp goes away; the request moves on meanwhile; FluxUp comes back on the same address.
  const url = new URL(server.url);
  await server.stop();
  setStatus(name, { phase: 'Committing', message: 'moved on while the dashboard was away' });
  server = await startServer(env, Number(url.port));

  // No further change: the page must ask for what it shows when it reconnects.
  await page.waitForFunction(
    () => {
      const s = document.querySelector('section[data-operation]');
      return s?.dataset.phase === 'Committing' && s.textContent.includes('moved on while the dashboard was away');
    },
    undefined,
    { timeout: 15_000 },
  );
  assert.deepEqual(errors, []);
  kubectl(['delete', 'upgraderequest', '-n', NS, name, '--wait=false']);
  await page.close();
});
