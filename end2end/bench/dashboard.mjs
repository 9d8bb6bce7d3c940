// Dashboard figures: what a browser downloads to start (wasm + js + css, gzipped), the delay
// from a status change in Kubernetes to the page showing it, and the peer comparison of
// first-load.mjs (every page's first load, the apps page's time to first byte) with 1,000
// ManagedApps on the apps page.
//
//   node end2end/bench/dashboard.mjs      (after `cargo leptos build [--release]`, with the full
//                                          test sandbox up: scripts/test leaves it stopped,
//                                          `SANDBOX_STATE=target/test-sandbox-full sandbox/sandbox up --profile full`)
//
// It serves the release build when there is one (scripts/build-release; see first-load.mjs). The
// server-side figures with 1,000 resolved apps are also in `cargo bench -p fluxup --bench scale`.
import { readFileSync, readdirSync } from 'node:fs';
import https from 'node:https';
import path from 'node:path';
import { gzipSync } from 'node:zlib';
import { startServer } from '../tests/support/server.mjs';
import { peerFigures, preferRelease } from './first-load.mjs';
import { launchBrowser } from '../tests/support/browser.mjs';
import { kubectl, outboundAllow, resolvedDemoApp, root, sandbox, state } from '../tests/support/sandbox.mjs';

const NS = 'webapp';
const APP = 'webapp-bench';
const FLEET_NS = 'bench-fleet';
const FLEET = 1000;

function transferSizes() {
  const dir = path.join(preferRelease().site, 'pkg');
  let raw = 0;
  let gzipped = 0;
  // What every page loads first; a split build's chunks come when their page is shown.
  const initial = (f) => /^(fluxup\.(wasm|js|css)|__wasm_split.*\.js)$/.test(f);
  for (const file of readdirSync(dir).filter((f) => /\.(wasm|js|css)$/.test(f))) {
    const bytes = readFileSync(path.join(dir, file));
    const gz = gzipSync(bytes, { level: 9 }).length;
    console.log(`  ${initial(file) ? '' : 'chunk '}${file}: ${bytes.length} B, ${gz} B gzipped`);
    if (!initial(file)) continue;
    raw += bytes.length;
    gzipped += gz;
  }
  const profile = raw > 1_500_000 ? 'debug build' : 'release build';
  console.log(`initial transfer (${profile}): ${(gzipped / 1024).toFixed(0)} KiB gzipped, ${(raw / 1024).toFixed(0)} KiB raw (goal <= 400 KB gzipped, release)`);
}

/** A merge patch of an UpgradeRequest's status straight to the API server; resolves on its answer. */
function patchStatus(name, status) {
  const url = new URL(`${sandbox.SANDBOX_APISERVER}/apis/fluxup.dev/v1alpha1/namespaces/${NS}/upgraderequests/${name}/status`);
  const body = JSON.stringify({ status });
  return new Promise((resolve, reject) => {
    const request = https.request(url, {
      method: 'PATCH',
      headers: { 'content-type': 'application/merge-patch+json', 'content-length': Buffer.byteLength(body) },
      cert: readFileSync(path.join(state, 'pki/admin.crt')),
      key: readFileSync(path.join(state, 'pki/admin.key')),
      ca: readFileSync(path.join(state, 'pki/ca.crt')),
    }, (response) => {
      response.resume();
      response.on('end', () => (response.statusCode === 200 ? resolve() : reject(new Error(`PATCH ${response.statusCode}`))));
    });
    request.on('error', reject);
    request.end(body);
  });
}

async function liveDelay() {
  // Nobody but this benchmark moves the request: it writes the request's status itself.
  await resolvedDemoApp(APP);
  const server = await startServer({ KUBECONFIG: sandbox.KUBECONFIG, FLUXUP_CONTROLLERS: 'false', FLUXUP_OUTBOUND_ALLOW: outboundAllow });
  const browser = await launchBrowser();
  try {
    const page = await browser.newPage();
    await page.goto(`${server.url}/apps/${NS}/${APP}`);
    await page.waitForSelector('[data-hydrated="true"]');
    await page.waitForSelector('#dry-run');
    await page.click('#dry-run');
    const section = page.locator('section[data-operation]');
    await section.waitFor();
    const name = await section.getAttribute('data-operation');
    const phases = ['Preflight', 'Suspending', 'Quiescing', 'Snapshotting', 'Committing', 'Reconciling', 'HealthChecking'];
    const delays = [];
    for (let i = 0; i < 21; i++) {
      const phase = phases[i % phases.length];
      await patchStatus(name, { phase, message: `bench step ${i}` });
      const written = performance.now();
      await page.waitForFunction(
        ([p, m]) => {
          const s = document.querySelector('section[data-operation]');
          return s && s.dataset.phase === p && s.textContent.includes(m);
        },
        [phase, `bench step ${i}`],
        { polling: 'raf', timeout: 10_000 },
      );
      delays.push(performance.now() - written);
    }
    delays.sort((a, b) => a - b);
    const at = (p) => delays[Math.min(delays.length - 1, Math.ceil((p / 100) * delays.length) - 1)];
    console.log(`status change -> page shows it, ${delays.length} changes: median ${at(50).toFixed(0)} ms, p95 ${at(95).toFixed(0)} ms, max ${delays.at(-1).toFixed(0)} ms (goal <= 300 ms; the Flux Operator UI polls every 5-30 s)`);
    kubectl(['delete', 'upgraderequest', '-n', NS, name, '--wait=false']);
  } finally {
    await browser.close();
    await server.stop();
  }
}

/**
 * 1,000 ManagedApps in a namespace of their own, each with a status as FluxUp's controllers would
 * write it (an update available), for the apps page at that size. No controller runs: the
 * HelmReleases they name do not exist.
 */
function fleet() {
  kubectl(['apply', '--server-side', '-f', '-'], JSON.stringify({ apiVersion: 'v1', kind: 'Namespace', metadata: { name: FLEET_NS } }));
  const app = (i) => ({
    apiVersion: 'fluxup.dev/v1alpha1', kind: 'ManagedApp',
    metadata: { name: `app-${String(i).padStart(4, '0')}`, namespace: FLEET_NS },
    spec: { helmReleaseRef: { name: `app-${i}` }, kustomizationRef: { name: `app-${i}` } },
  });
  const items = Array.from({ length: FLEET }, (_, i) => app(i));
  kubectl(['apply', '--server-side', '-f', '-'], JSON.stringify({ apiVersion: 'v1', kind: 'List', items }));
  const types = ['patch', 'minor', 'major'];
  const withStatus = items.map((a, i) => ({
    ...a,
    status: {
      state: 'UpdateAvailable',
      currentVersion: { chart: '1.0.0', appVersion: '1.0.0' },
      availableUpdate: { chart: ['1.0.1', '1.1.0', '2.0.0'][i % 3], updateType: types[i % 3] },
    },
  }));
  try {
    kubectl(['apply', '--server-side', '--subresource=status', '-f', '-'], JSON.stringify({ apiVersion: 'v1', kind: 'List', items: withStatus }));
  } catch (e) {
    console.log(`(the fleet's apps have no status: ${e.message.split('\n')[0]})`);
  }
}

transferSizes();
try {
  await liveDelay();
} catch (e) {
  console.log(`status change -> page shows it: not measured (${e.message.split('\n')[0]})`);
}
fleet();
try {
  const demoApps = kubectl(['get', 'managedapps', '-A', '--no-headers']).trim().split('\n').length;
  await peerFigures({ env: { KUBECONFIG: sandbox.KUBECONFIG }, apps: demoApps, appPage: `/apps/${NS}/${APP}` });
} finally {
  kubectl(['delete', 'namespace', FLEET_NS, '--wait=false']);
}
