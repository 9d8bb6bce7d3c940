// The peer comparison: what a browser fetches to show each page the first time (HTML, wasm, js,
// css and whatever else it asks the server for, gzipped as a browser is sent them), the time to
// first byte of the apps page, and the time a later page takes once the apps page is shown,
// printed beside the Flux Operator Web UI's figures recorded in the README.
//
//   node end2end/bench/first-load.mjs
//       without a cluster: the pages as FluxUp shows them unconnected (the bundle is the same);
//   node end2end/bench/dashboard.mjs
//       with the full test sandbox up: the same with 1,000 ManagedApps on the apps page.
//
// It serves the release build when there is one (target/release/fluxup with the site that
// `scripts/measure-site` builds in target/site-release); FLUXUP_BIN and LEPTOS_SITE_ROOT choose
// another binary and site.
import { existsSync } from 'node:fs';
import http from 'node:http';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { launchBrowser } from '../tests/support/browser.mjs';
import { startServer } from '../tests/support/server.mjs';

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..');

/** The Flux Operator Web UI v0.59.0, measured side by side (README, Dashboard). */
export const PEER = { name: 'Flux Operator Web UI v0.59.0', firstLoadBytes: 146_000, polling: '30 s' };

/** Release binary and site unless the caller chose: what the demo serves. */
export function preferRelease() {
  const bin = path.join(root, 'target/release/fluxup');
  const site = path.join(root, 'target/site-release');
  if (!process.env.FLUXUP_BIN && existsSync(bin) && existsSync(path.join(site, 'pkg'))) {
    process.env.FLUXUP_BIN = bin;
    process.env.LEPTOS_SITE_ROOT ??= site;
  }
  return {
    bin: process.env.FLUXUP_BIN ?? path.join(root, 'target/debug/fluxup'),
    site: process.env.LEPTOS_SITE_ROOT ?? path.join(root, 'target/site'),
  };
}

/** GET `url` asking for gzip only: the bytes on the wire, ms to the response head and to the end. */
export function gzipGet(url) {
  return new Promise((resolve, reject) => {
    const started = performance.now();
    const request = http.get(url, { headers: { 'accept-encoding': 'gzip' } }, (response) => {
      const head = performance.now() - started;
      let bytes = 0;
      response.on('data', (chunk) => (bytes += chunk.length));
      response.on('end', () => resolve({
        status: response.statusCode,
        encoding: response.headers['content-encoding'] ?? 'identity',
        bytes,
        head,
        whole: performance.now() - started,
      }));
    });
    request.on('error', reject);
  });
}

const at = (sorted, p) => sorted[Math.min(sorted.length - 1, Math.ceil((p / 100) * sorted.length) - 1)];
const kb = (bytes) => `${(bytes / 1000).toFixed(1)} kB`;

/** Time to first byte of `path` over `times` requests: median and p95 (ms), and the page's size. */
export async function firstByte(base, pagePath = '/', times = 30) {
  const heads = [];
  let last;
  for (let i = 0; i < times; i++) {
    last = await gzipGet(`${base}${pagePath}`);
    heads.push(last.head);
  }
  heads.sort((a, b) => a - b);
  return { median: at(heads, 50), p95: at(heads, 95), gzipped: last.bytes };
}

/**
 * Opens `pagePath` in a fresh browser context (empty cache) and waits until it is hydrated; every
 * same-origin GET it made is then fetched again with gzip, as the server sends it to a browser.
 */
export async function firstLoad(browser, base, pagePath) {
  const context = await browser.newContext();
  const page = await context.newPage();
  const urls = new Set();
  page.on('request', (request) => {
    if (request.method() === 'GET' && request.url().startsWith(base) && request.resourceType() !== 'websocket') {
      urls.add(request.url());
    }
  });
  await page.goto(`${base}${pagePath}`);
  await page.waitForSelector('[data-hydrated="true"]', { timeout: 30_000 });
  await page.waitForLoadState('networkidle').catch(() => {});
  const parts = [];
  for (const url of urls) {
    const r = await gzipGet(url);
    parts.push({ path: new URL(url).pathname, ...r });
  }
  await context.close();
  return { parts, bytes: parts.reduce((sum, p) => sum + p.bytes, 0) };
}

/**
 * From the apps page, hydrated, to another page by its link: ms until that page's heading shows,
 * the first time (a split build fetches the page's chunk then) and again once it was seen.
 */
async function laterPage(browser, base, link, heading) {
  const context = await browser.newContext();
  const page = await context.newPage();
  const times = [];
  try {
    for (let i = 0; i < 2; i++) {
      await page.goto(`${base}/`);
      await page.waitForSelector('[data-hydrated="true"]', { timeout: 30_000 });
      const started = performance.now();
      await page.click(`a[href="${link}"]`, { timeout: 5_000 });
      await page.waitForFunction((h) => document.querySelector('h1')?.textContent.includes(h), heading, { polling: 'raf', timeout: 10_000 });
      times.push(performance.now() - started);
    }
  } finally {
    await context.close();
  }
  return times;
}

/**
 * Prints every figure. `env` is for the server (a KUBECONFIG for a cluster), `apps` how many apps
 * the apps page is expected to show, `appPage` one app's page to load.
 */
export async function peerFigures({ env = {}, apps = 0, appPage } = {}) {
  const { bin, site } = preferRelease();
  console.log(`serving ${path.relative(root, bin)} with the site in ${path.relative(root, site)}`);
  const server = await startServer({ FLUXUP_CONTROLLERS: 'false', ...env });
  const browser = await launchBrowser();
  try {
    // The server is ready before its watch caches hold every app.
    for (let tries = 0; apps > 0; tries++) {
      const html = await (await fetch(`${server.url}/`)).text();
      const rows = html.split('<tr id="app-').length - 1;
      if (rows >= apps) break;
      if (tries > 300) throw new Error(`the apps page shows ${rows} of ${apps} apps after 30 s`);
      await new Promise((r) => setTimeout(r, 100));
    }
    const pages = [['apps page', '/'], ['add an app', '/apps/new'], ['snapshots', '/snapshots'], ['settings', '/settings']];
    if (appPage) pages.splice(1, 0, ['app page', appPage]);
    const loads = [];
    for (const [name, pagePath] of pages) {
      const load = await firstLoad(browser, server.url, pagePath);
      loads.push([name, pagePath, load]);
    }
    const [, , apps0] = loads[0];
    console.log(`first load of the apps page (${apps} apps), gzipped as sent:`);
    for (const p of apps0.parts) console.log(`  ${p.path}: ${p.bytes} B (${p.encoding})`);
    console.log('first load per page (a fresh browser: every byte it fetched, gzipped):');
    for (const [name, pagePath, load] of loads) {
      console.log(`  ${name.padEnd(11)} ${pagePath.padEnd(28)} ${String(load.bytes).padStart(8)} B  ${kb(load.bytes).padStart(9)}  (${load.parts.length} requests)`);
    }
    const ttfb = await firstByte(server.url, '/');
    console.log(`apps page (${apps} apps): time to first byte median ${ttfb.median.toFixed(1)} ms, p95 ${ttfb.p95.toFixed(1)} ms; HTML ${kb(ttfb.gzipped)} gzipped`);
    for (const [link, heading] of [['/settings', 'Settings'], ['/snapshots', 'Snapshots'], ['/apps/new', 'Add an app']]) {
      try {
        const [first, again] = await laterPage(browser, server.url, link, heading);
        console.log(`apps page -> ${link}: ${first.toFixed(0)} ms the first time, ${again.toFixed(0)} ms again (goal: under 100 ms, warm)`);
      } catch (e) {
        console.log(`apps page -> ${link}: not measured (${e.message.split('\n')[0]})`);
      }
    }
    const ours = apps0.bytes;
    const ratio = ours / PEER.firstLoadBytes;
    console.log('');
    const w = PEER.name.length;
    console.log(`  ${''.padEnd(w)}  first load (gzipped)  changes reach the page`);
    console.log(`  ${'FluxUp'.padEnd(w)}  ${kb(ours).padStart(20)}  pushed (WebSocket; see the status-change figure)`);
    console.log(`  ${PEER.name}  ${kb(PEER.firstLoadBytes).padStart(20)}  polls every ${PEER.polling}`);
    console.log(`  FluxUp's first load is ${ratio.toFixed(2)} times the peer's${ratio <= 1 ? ' (at or below it: goal met)' : ' (goal: at or below it)'}`);
  } finally {
    await browser.close();
    await server.stop();
  }
}

if (process.argv[1] === fileURLToPath(import.meta.url)) {
  // Unconnected, the app page says so; its code is loaded all the same.
  await peerFigures({ appPage: '/apps/webapp/webapp' });
}
