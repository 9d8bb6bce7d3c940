// Every page of the dashboard, as a person on a phone, with a keyboard or a screen reader meets
// it: axe-core's WCAG 2.1 A/AA rules find nothing in light or dark mode, at desktop and phone
// sizes; the navigation marks the current page; on a phone nothing is wider than the screen; the keyboard reaches the content first
// through a skip link and can run a dry run of an upgrade without a mouse.
//
// Needs the full-profile test sandbox up (scripts/test starts it), as dashboard.test.mjs.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { accessibilityViolations, loggedIn, startDashboard } from './support/dashboard.mjs';
import { demoApp, sandbox } from './support/sandbox.mjs';

const NS = 'webapp';
const APP = 'webapp-a11y';

// Each page, and the navigation link marked as the current page on it.
const PAGES = [
  ['apps', '/', 'Apps'],
  ['app', `/apps/${NS}/${APP}`],
  ['add an app', '/apps/new'],
  ['snapshots', '/snapshots', 'Snapshots'],
  ['settings', '/settings', 'Settings'],
];

const PHONE = { viewport: { width: 375, height: 740 }, isMobile: true, hasTouch: true, deviceScaleFactor: 2 };

let dashboard;

before(async () => {
  demoApp(APP);
  dashboard = await startDashboard();
});

after(async () => {
  await dashboard?.stop();
});

/** Opens `url` in `context`, hydrated and with its data loaded. */
async function open(context, url) {
  const page = await context.newPage();
  await page.goto(`${dashboard.server.url}${url}`);
  await page.waitForSelector('[data-hydrated="true"]');
  await page.waitForLoadState('networkidle');
  return page;
}

for (const [size, options] of [['desktop', { viewport: { width: 1280, height: 800 } }], ['phone', PHONE]]) {
  for (const scheme of ['light', 'dark']) {
    test(`${size}, ${scheme} mode: no WCAG 2.1 A/AA violations on any page`, async () => {
      const context = await loggedIn(dashboard, sandbox.DEMO_USER, { ...options, colorScheme: scheme });
      const found = [];
      for (const [name, url, nav] of PAGES) {
        const page = await open(context, url);
        for (const v of await accessibilityViolations(page)) found.push(`${name}: ${v}`);
        const current = await page.locator('nav a[aria-current="page"]').allTextContents();
        if (current.join() !== (nav ?? '')) found.push(`${name}: the nav marks ${current} as the current page`);
        if (size === 'phone') {
          const [scroll, width] = await page.evaluate(() =>
            [document.documentElement.scrollWidth, window.innerWidth]);
          if (scroll > width) found.push(`${name}: ${scroll} px wide on a ${width} px screen`);
        }
        await page.close();
      }
      await context.close();
      assert.deepEqual(found, []);
    });
  }
}

test('the theme follows the system until chosen, and the choice outlives a reload', async () => {
  const context = await loggedIn(dashboard, sandbox.DEMO_USER, { colorScheme: 'dark' });
  const page = await open(context, '/');
  const background = () => page.evaluate(() => getComputedStyle(document.querySelector('main').parentElement).backgroundColor);
  const darkBackground = await background();
  const toggle = page.locator('#theme-toggle');
  assert.equal(await toggle.textContent(), 'Theme: system');

  await toggle.click();
  assert.equal(await toggle.textContent(), 'Theme: dark');
  assert.equal(await background(), darkBackground);
  await toggle.click();
  assert.equal(await toggle.textContent(), 'Theme: light');
  const lightBackground = await background();
  assert.notEqual(lightBackground, darkBackground, 'light mode on a dark system');

  // The server renders the chosen theme: no flash of the other one.
  await page.reload();
  const html = await (await page.request.get(`${dashboard.server.url}/`)).text();
  assert.match(html, /Theme: light/);
  assert.equal(await background(), lightBackground);
  await context.close();
});

test('the keyboard reaches the content first and runs a dry run without a mouse', async () => {
  const page = await open(dashboard.operator, `/apps/${NS}/${APP}`);
  await page.waitForSelector('#version-picker');

  await page.keyboard.press('Tab');
  assert.equal(await page.evaluate(() => document.activeElement.textContent), 'Skip to content');
  await page.keyboard.press('Enter');
  assert.equal(await page.evaluate(() => document.activeElement.id), 'main');

  // Tab from the start of the content to the dry-run button, as a keyboard user would.
  let reached = false;
  for (let i = 0; i < 30 && !reached; i++) {
    await page.keyboard.press('Tab');
    reached = await page.evaluate(() => document.activeElement.id === 'dry-run');
  }
  assert.ok(reached, 'Tab reaches the dry-run button');
  await page.keyboard.press('Enter');
  const checks = await page.waitForSelector('#preflight-checks', { timeout: 60_000 });
  assert.ok((await checks.textContent()).length > 0);
  // The result (checks, diff, Approve) meets the same rules as the pages.
  await page.waitForSelector('#dry-run-diff');
  assert.deepEqual(await accessibilityViolations(page), []);
  await page.close();
});
