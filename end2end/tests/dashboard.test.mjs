// The dashboard against the full sandbox (real Flux, Gitea, CSI): the demo apps with their
// versions; a dry run shows the exact diff; an approved upgrade's phases advance live, without
// a reload, to Succeeded; and the upgrade is rolled back from the history.
//
// Needs the full-profile test sandbox up (scripts/test starts it; SANDBOX_FULL_STATE, default
// target/test-sandbox-full). The demo fleet is seeded here, as the Rust scenario tests do.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { startServer } from './support/server.mjs';
import { launchBrowser } from './support/browser.mjs';

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..');
const state = process.env.SANDBOX_FULL_STATE ?? path.join(root, 'target/test-sandbox-full');
const NS = 'webapp';
const APP = 'webapp-ui';

function sandboxEnv() {
  const env = {};
  for (const file of ['env', 'env.full']) {
    let text;
    try {
      text = readFileSync(path.join(state, file), 'utf8');
    } catch {
      throw new Error(`no ${file} in ${state}: start the full sandbox first (scripts/test does)`);
    }
    for (const line of text.split('\n')) {
      const i = line.indexOf('=');
      if (i > 0) env[line.slice(0, i)] = line.slice(i + 1);
    }
  }
  return env;
}

const sandbox = sandboxEnv();
const kubectl = (args, input) =>
  execFileSync(sandbox.SANDBOX_KUBECTL, ['--kubeconfig', sandbox.KUBECONFIG, ...args], {
    input,
    encoding: 'utf8',
  });

let server;
let browser;

before(async () => {
  execFileSync(path.join(root, 'sandbox/demo/seed'), { env: { ...process.env, SANDBOX_STATE: state } });
  // An app of this test's own for the demo's webapp, naming the Git file of its version.
  kubectl(['apply', '--server-side', '-f', '-'], JSON.stringify({
    apiVersion: 'fluxup.dev/v1alpha1', kind: 'ManagedApp',
    metadata: { name: APP, namespace: NS },
    spec: {
      helmReleaseRef: { name: 'webapp' },
      kustomizationRef: { name: 'webapp', namespace: 'flux-system' },
      versionPolicy: { chart: { git: { file: 'apps/webapp/helmrelease.yaml' } } },
    },
  }));
  server = await startServer({
    KUBECONFIG: sandbox.KUBECONFIG,
    FLUXUP_CONTROLLERS: 'true',
    POD_NAMESPACE: 'default',
  });
  browser = await launchBrowser();
});

after(async () => {
  await browser?.close();
  await server?.stop();
});

/** The chart version Flux runs for the demo webapp now. */
function deployed() {
  const hr = JSON.parse(kubectl(['get', 'helmrelease', '-n', NS, 'webapp', '-o', 'json']));
  return hr.status?.history?.[0]?.chartVersion ?? hr.status?.lastAttemptedRevision;
}

/** Polls until `check` returns a value, or fails with what it last saw. */
async function until(what, check, timeoutMs = 60_000) {
  const deadline = Date.now() + timeoutMs;
  let last;
  for (;;) {
    last = await check();
    if (last && last.ok) return last.value;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}; last: ${JSON.stringify(last)}`);
    await new Promise((r) => setTimeout(r, 200));
  }
}

test('the apps page lists the demo apps with their versions, rendered on the server', async () => {
  const row = await until('the app in the SSR page', async () => {
    const html = await (await fetch(server.url)).text();
    const m = html.match(new RegExp(`<tr id="app-${NS}-${APP}"[\\s\\S]*?</tr>`));
    return m && /\d+\.\d+\.\d+/.test(m[0]) ? { ok: true, value: m[0] } : { ok: false, value: html.length };
  });
  assert.match(row, new RegExp(`>${APP}<`));
  assert.match(row, new RegExp(deployed().replaceAll('.', '\\.')), 'the version Flux runs');
});

test('search narrows the list once hydrated', async () => {
  const page = await browser.newPage();
  await page.goto(server.url);
  await page.waitForSelector('[data-hydrated="true"]');
  await page.fill('#app-search', APP);
  await page.waitForFunction(() => document.querySelectorAll('#apps tbody tr').length === 1);
  assert.equal(await page.locator(`#app-${NS}-${APP}`).count(), 1);
  await page.close();
});

test('dry run shows the diff; the approved upgrade advances live to Succeeded; then it is rolled back', async () => {
  const before = deployed();
  const target = before === '1.0.1' ? '1.1.0' : '1.0.1';
  const page = await browser.newPage();
  const errors = [];
  page.on('pageerror', (e) => errors.push(e.message));
  await page.goto(`${server.url}/apps/${NS}/${APP}`);
  await page.waitForSelector('[data-hydrated="true"]');
  await page.waitForSelector('#version-picker');
  await page.selectOption('#version-picker', target);

  // Approve is refused until a dry run of this version passed.
  assert.equal(await page.locator('#approve').isDisabled(), true);
  await page.click('#dry-run');
  const diff = await page.waitForSelector('#dry-run-diff', { timeout: 60_000 });
  const text = await diff.textContent();
  assert.match(text, new RegExp(`^\\+.*version: ${target.replaceAll('.', '\\.')}`, 'm'), text);
  assert.match(text, new RegExp(`^-.*version: ${before.replaceAll('.', '\\.')}`, 'm'), text);
  assert.equal(await page.locator('#preflight-checks li').count(), 5);

  // Approve, and watch the phases change on the page without reloading it.
  await page.click('#approve');
  const progress = page.locator('section[data-operation*="-upgrade-"]');
  await progress.waitFor();
  const seen = new Set();
  await until('the upgrade to succeed on the page', async () => {
    const phase = await progress.getAttribute('data-phase');
    seen.add(phase);
    return { ok: phase === 'Succeeded' || phase === 'Failed', value: phase };
  }, 180_000);
  assert.equal(await progress.getAttribute('data-phase'), 'Succeeded', await progress.textContent());
  assert.ok(seen.size >= 3, `phases seen live: ${[...seen]}`);
  assert.equal(
    await progress.locator('li[data-state="done"]').count(),
    await progress.locator('li').count(),
    'every phase done',
  );
  assert.equal(deployed(), target, 'Flux runs the new version');

  // Roll it back from the history, after a confirmation.
  await page.reload();
  await page.waitForSelector('[data-hydrated="true"]');
  const upgrade = await progress.getAttribute('data-operation').catch(() => null);
  const entry = page.locator('#history li', { has: page.locator('button.rollback') }).first();
  await entry.locator('button.rollback').click();
  await entry.locator('button.confirm-rollback').click();
  const rollback = page.locator('section[data-operation*="-rollback-"]');
  await rollback.waitFor();
  await until('the rollback to succeed on the page', async () => {
    const phase = await rollback.getAttribute('data-phase');
    return { ok: phase === 'Succeeded' || phase === 'Failed', value: phase };
  }, 180_000);
  assert.equal(await rollback.getAttribute('data-phase'), 'Succeeded', await rollback.textContent());
  await until('Flux to run the old version again', async () => ({ ok: deployed() === before, value: deployed() }));
  assert.deepEqual(errors, [], `browser errors (upgrade ${upgrade})`);
  await page.close();
});
