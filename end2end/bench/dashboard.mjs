// Dashboard figures: what a browser downloads to start (wasm + js + css, gzipped), and the delay
// from a status change in Kubernetes to the page showing it.
//
//   node end2end/bench/dashboard.mjs      (after `cargo leptos build [--release]`, with the full
//                                          test sandbox up: scripts/test leaves it stopped,
//                                          `SANDBOX_STATE=target/test-sandbox-full sandbox/sandbox up --profile full`)
//
// The server time to first byte of the apps page with 1,000 apps is in `cargo bench -p fluxup
// --bench scale`.
import { readFileSync, readdirSync } from 'node:fs';
import https from 'node:https';
import path from 'node:path';
import { gzipSync } from 'node:zlib';
import { startServer } from '../tests/support/server.mjs';
import { launchBrowser } from '../tests/support/browser.mjs';
import { kubectl, resolvedDemoApp, root, sandbox, state } from '../tests/support/sandbox.mjs';

const NS = 'webapp';
const APP = 'webapp-bench';

function transferSizes() {
  const dir = path.join(root, 'target/site/pkg');
  let raw = 0;
  let gzipped = 0;
  for (const file of readdirSync(dir).filter((f) => /\.(wasm|js|css)$/.test(f))) {
    const bytes = readFileSync(path.join(dir, file));
    const gz = gzipSync(bytes, { level: 9 }).length;
    console.log(`  ${file}: ${bytes.length} B, ${gz} B gzipped`);
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
  const server = await startServer({ KUBECONFIG: sandbox.KUBECONFIG, FLUXUP_CONTROLLERS: 'false' });
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

transferSizes();
await liveDelay();
