// The dashboard against the full sandbox (real Flux, Gitea, CSI, Dex): people log in through
// Dex and act with their own RBAC. The demo apps with their versions; a dry run shows the exact
// diff; an approved upgrade's phases advance live, without a reload, to Succeeded; the upgrade
// is rolled back from the history. Then what must be refused is: anonymous requests, a user
// whose RBAC forbids upgrades (nothing is created), and requests from another site.
//
// Needs the full-profile test sandbox up (scripts/test starts it; SANDBOX_FULL_STATE, default
// target/test-sandbox-full). The demo fleet is seeded here, as the Rust scenario tests do.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import http from 'node:http';
import { accessibilityViolations, kubernetesUser, startDashboard } from './support/dashboard.mjs';
import { demoApp, kubectl, sandbox, until } from './support/sandbox.mjs';

const NS = 'webapp';
const APP = 'webapp-ui';

let server;
let operator;
let viewer;
let dashboard;

before(async () => {
  demoApp(APP);
  dashboard = await startDashboard();
  ({ server, operator, viewer } = dashboard);
});

/** The session cookie of a logged-in context, as a Cookie header. */
async function cookieOf(context) {
  const cookies = await context.cookies(server.url);
  return cookies.map((c) => `${c.name}=${c.value}`).join('; ');
}

/** The status a WebSocket handshake to /api/ws gets with `headers` (101 when it is accepted). */
function wsStatus(headers) {
  return new Promise((resolve, reject) => {
    const request = http.get(`${server.url}/api/ws`, {
      headers: {
        connection: 'Upgrade', upgrade: 'websocket', 'sec-websocket-version': '13',
        'sec-websocket-key': 'dGhlIHNhbXBsZSBub25jZQ==', ...headers,
      },
    });
    request.on('upgrade', (response, socket) => { socket.destroy(); resolve(response.statusCode); });
    request.on('response', (response) => { response.resume(); resolve(response.statusCode); });
    request.on('error', reject);
  });
}

/** How many UpgradeRequests the namespace has. */
function upgradeCount() {
  return JSON.parse(kubectl(['get', 'upgraderequests', '-n', NS, '-o', 'json'])).items.length;
}

after(async () => {
  await dashboard?.stop();
});

/** The chart version Flux runs for the demo webapp now. */
function deployed() {
  const hr = JSON.parse(kubectl(['get', 'helmrelease', '-n', NS, 'webapp', '-o', 'json']));
  return hr.status?.history?.[0]?.chartVersion ?? hr.status?.lastAttemptedRevision;
}

test('the apps page lists the demo apps with their versions, rendered on the server', async () => {
  const row = await until('the app in the SSR page', async () => {
    const html = await (await fetch(server.url, { headers: { cookie: await cookieOf(operator) } })).text();
    const m = html.match(new RegExp(`<tr id="app-${NS}-${APP}"[\\s\\S]*?</tr>`));
    return m && /\d+\.\d+\.\d+/.test(m[0]) ? { ok: true, value: m[0] } : { ok: false, value: html.length };
  });
  assert.match(row, new RegExp(`>${APP}<`));
  assert.match(row, new RegExp(deployed().replaceAll('.', '\\.')), 'the version Flux runs');
});

test('search narrows the list once hydrated', async () => {
  const page = await operator.newPage();
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
  const page = await operator.newPage();
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
  // target, app, version, policy, flux (nobody else holds its Kustomization and HelmRelease), git
  assert.equal(await page.locator('#preflight-checks li').count(), 7);

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
    await progress.locator('ol > li[data-state="done"]').count(),
    await progress.locator('ol > li').count(),
    'every phase done',
  );
  // Each health check with its result, as the request's status records them.
  const health = progress.locator('[data-field="health"]');
  await health.waitFor();
  assert.equal(await health.getAttribute('data-state'), 'Passed');
  assert.deepEqual(
    await health.locator('li').evaluateAll((items) => items.map((li) => [li.dataset.check, li.dataset.passed])),
    [['release', 'true'], ['workloads', 'true']],
    await health.textContent(),
  );
  assert.match(await health.locator('li[data-check="release"]').textContent(), new RegExp(`is Ready at ${target.replaceAll('.', '\\.')}`));
  assert.equal(deployed(), target, 'Flux runs the new version');
  assert.deepEqual(await accessibilityViolations(page), [], 'the finished progress meets WCAG 2.1 AA');

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

test('without a login: pages send to the login, APIs answer 401, nothing is created', async () => {
  const before = upgradeCount();
  const page = await fetch(`${server.url}/apps/${NS}/${APP}`, { redirect: 'manual' });
  assert.equal(page.status, 303);
  assert.match(page.headers.get('location'), /^\/auth\/login\?return=/);
  const form = new URLSearchParams({ namespace: NS, app: APP, version: '1.0.1', dry_run: 'false' });
  const call = await fetch(`${server.url}/api/request_upgrade`, {
    method: 'POST', body: form, headers: { origin: server.url },
  });
  assert.equal(call.status, 401);
  assert.equal(await wsStatus({ origin: server.url }), 401);
  assert.equal(upgradeCount(), before, 'nothing created');

});

test('a user whose RBAC forbids upgrades sees the app, no upgrade button, and is refused', async () => {
  const page = await viewer.newPage();
  await page.goto(`${server.url}/apps/${NS}/${APP}`);
  await page.waitForSelector('#upgrade-not-allowed');
  assert.equal(await page.locator('#approve').count(), 0);
  assert.equal(await page.locator('button.rollback').count(), 0);
  await page.close();
  // Calling the server function anyway: the API server refuses the impersonated request.
  const before = upgradeCount();
  const form = new URLSearchParams({ namespace: NS, app: APP, version: '1.0.1', dry_run: 'false' });
  const call = await fetch(`${server.url}/api/request_upgrade`, {
    method: 'POST', body: form, headers: { origin: server.url, cookie: await cookieOf(viewer) },
  });
  assert.notEqual(call.status, 200);
  assert.match(await call.text(), /forbidden/i);
  assert.equal(upgradeCount(), before, 'nothing created');
});

test('requests from another site are refused, even with a session', async () => {
  const before = upgradeCount();
  const form = new URLSearchParams({ namespace: NS, app: APP, version: '1.0.1', dry_run: 'true' });
  for (const origin of ['http://evil.example', undefined]) {
    const headers = { cookie: await cookieOf(operator) };
    if (origin) headers.origin = origin;
    const call = await fetch(`${server.url}/api/request_upgrade`, { method: 'POST', body: form, headers });
    assert.equal(call.status, 403, `origin ${origin}`);
    assert.match(await call.text(), /cross-site/);
  }
  assert.equal(await wsStatus({ cookie: await cookieOf(operator), origin: 'http://evil.example' }), 403);
  assert.equal(await wsStatus({ cookie: await cookieOf(operator), origin: server.url }), 101);
  assert.equal(upgradeCount(), before, 'nothing created');
  // The same request from FluxUp's own origin goes through (a dry run: it changes nothing).
  const ok = await fetch(`${server.url}/api/request_upgrade`, {
    method: 'POST', body: form, headers: { cookie: await cookieOf(operator), origin: server.url },
  });
  assert.equal(ok.status, 200, await ok.text());
});

/** An ID token for `user` from Dex (its password grant), as a script would get one. */
async function idToken(user) {
  const res = await fetch(`${sandbox.OIDC_ISSUER}/token`, {
    method: 'POST',
    body: new URLSearchParams({
      grant_type: 'password', username: user, password: sandbox.DEMO_PASSWORD,
      client_id: sandbox.OIDC_CLIENT_ID, client_secret: sandbox.OIDC_CLIENT_SECRET,
      scope: 'openid email profile',
    }),
  });
  assert.equal(res.status, 200, await res.clone().text());
  return (await res.json()).id_token;
}

test('the REST API: a script with an ID token dry-runs an upgrade; errors are JSON with the right status', async () => {
  const api = `${server.url}/api/v1`;
  const as = (token) => ({ authorization: `Bearer ${token}`, 'content-type': 'application/json' });
  const operatorToken = await idToken(sandbox.DEMO_USER);

  const apps = await (await fetch(`${api}/apps`, { headers: as(operatorToken) })).json();
  const app = apps.find((a) => a.namespace === NS && a.name === APP);
  assert.ok(app, JSON.stringify(apps.map((a) => a.name)));
  const updates = await (await fetch(`${api}/apps/${NS}/${APP}/updates`, { headers: as(operatorToken) })).json();
  assert.ok(updates.versions.length > 0 && !updates.versions.includes(app.current), JSON.stringify(updates));

  const target = updates.versions[0];
  const created = await fetch(`${api}/apps/${NS}/${APP}/upgrade`, {
    method: 'POST', headers: as(operatorToken), body: JSON.stringify({ version: target, dryRun: true }),
  });
  assert.equal(created.status, 201, await created.clone().text());
  const op = await created.json();
  assert.equal(op.kind, 'Upgrade');
  assert.equal(op.requested_by, kubernetesUser(sandbox.DEMO_USER), 'the API server recorded the person, not FluxUp');
  const done = await until('the dry run to end', async () => {
    const now = await (await fetch(`${api}/upgrades/${NS}/${op.name}`, { headers: as(operatorToken) })).json();
    return { ok: now.ended, value: now };
  });
  assert.equal(done.succeeded, true, done.message);
  assert.match(done.diff, new RegExp(`version: ${target.replaceAll('.', '\\.')}`));

  // What must be refused, each with a JSON error and nothing created.
  const before = upgradeCount();
  const refused = [
    [await fetch(`${api}/apps`), 401],
    [await fetch(`${api}/apps`, { headers: as('not-a-token') }), 401],
    [await fetch(`${api}/apps/${NS}/${APP}/upgrade`, {
      method: 'POST', headers: as(await idToken(sandbox.VIEWER_USER)), body: JSON.stringify({ version: target }),
    }), 403],
    [await fetch(`${api}/apps/${NS}/${APP}/upgrade`, {
      method: 'POST', headers: as(operatorToken), body: JSON.stringify({ verison: target }),
    }), 422],
    [await fetch(`${api}/apps/${NS}/no-such-app`, { headers: as(operatorToken) }), 404],
    [await fetch(`${api}/nothing-here`, { headers: as(operatorToken) }), 404],
  ];
  for (const [res, status] of refused) {
    assert.equal(res.status, status, `${res.url}: ${await res.clone().text()}`);
    assert.equal(typeof (await res.json()).error, 'string');
  }
  assert.equal(upgradeCount(), before, 'nothing created');

  // The version policy, as the caller: a viewer and bad bodies are refused with the spec unchanged.
  const policyOf = () => JSON.stringify(JSON.parse(kubectl(['get', 'managedapp', '-n', NS, APP, '-o', 'json'])).spec.versionPolicy ?? {});
  const policy = (token, body) => fetch(`${api}/apps/${NS}/${APP}/policy`, { method: 'POST', headers: as(token), body: JSON.stringify(body) });
  const untouched = policyOf();
  for (const [res, status] of [
    [await policy(await idToken(sandbox.VIEWER_USER), { part: 'chart', action: 'skip', version: '9.9.9' }), 403],
    [await policy(operatorToken, { part: 'chart', action: 'forget' }), 422],
    [await policy(operatorToken, { part: 'chart', action: 'skip', version: ' ' }), 422],
    [await policy(operatorToken, { part: 'example.com/not-an-image-it-runs', action: 'skip', version: '1.0.0' }), 422],
  ]) {
    assert.equal(res.status, status, `${JSON.stringify(status)}: ${await res.clone().text()}`);
    assert.equal(typeof (await res.json()).error, 'string');
  }
  assert.equal(policyOf(), untouched, 'refused changes leave the spec as it was');
  const skipped = await policy(operatorToken, { part: 'chart', action: 'skip', version: '9.9.9' });
  assert.equal(skipped.status, 200, await skipped.clone().text());
  assert.deepEqual((await skipped.json()).find((p) => p.part === 'chart').skip, ['9.9.9']);
  assert.deepEqual(JSON.parse(policyOf()).chart.skip, ['9.9.9'], 'kubectl sees it in the spec');
  const restored = await policy(operatorToken, { part: 'chart', action: 'unskip', version: '9.9.9' });
  assert.equal(restored.status, 200, await restored.clone().text());
  assert.deepEqual((await restored.json()).find((p) => p.part === 'chart').skip, []);
});

test('add an app: FluxUp proposes the ManagedApp for a HelmRelease, and creates it on confirmation', async () => {
  // A HelmRelease with no ManagedApp, as the webapp Kustomization would have applied it
  // (suspended: helm-controller leaves it alone).
  const ns = 'fluxup-add-app';
  kubectl(['apply', '--server-side', '--force-conflicts', '-f', '-'], JSON.stringify({ apiVersion: 'v1', kind: 'Namespace', metadata: { name: ns } }));
  kubectl(['delete', 'managedapp', '-n', ns, '--all', '--wait=true']);
  kubectl(['apply', '--server-side', '--force-conflicts', '-f', '-'], JSON.stringify({
    apiVersion: 'helm.toolkit.fluxcd.io/v2', kind: 'HelmRelease',
    metadata: { name: 'extra', namespace: ns,
      labels: { 'kustomize.toolkit.fluxcd.io/name': 'webapp', 'kustomize.toolkit.fluxcd.io/namespace': 'flux-system' } },
    spec: { interval: '10m', suspend: true,
      chart: { spec: { chart: 'webapp', sourceRef: { kind: 'HelmRepository', name: 'webapp', namespace: 'webapp' } } } },
  }));

  // The viewer may look but not create: the API server refuses, nothing is created.
  const seen = await viewer.newPage();
  await seen.goto(`${server.url}/apps/new`);
  await seen.waitForSelector('[data-hydrated="true"]');
  await seen.locator(`#candidate-${ns}-extra button.propose`).click();
  await seen.waitForSelector('#proposal');
  await seen.click('#create-app');
  await seen.waitForSelector('[role="alert"]');
  assert.match(await seen.locator('[role="alert"]').textContent(), /cannot create resource "managedapps"/);
  assert.equal(JSON.parse(kubectl(['get', 'managedapps', '-n', ns, '-o', 'json'])).items.length, 0);
  await seen.close();

  const page = await operator.newPage();
  await page.goto(`${server.url}/apps/new`);
  await page.waitForSelector('[data-hydrated="true"]');
  await page.locator(`#candidate-${ns}-extra button.propose`).click();
  const proposal = await (await page.waitForSelector('#proposal')).textContent();
  assert.match(proposal, /kind: ManagedApp/);
  assert.match(proposal, /kustomizationRef:\s+name: webapp\s+namespace: flux-system/);
  await page.click('#create-app');
  await page.waitForSelector('#created-app');
  const app = JSON.parse(kubectl(['get', 'managedapp', '-n', ns, 'extra', '-o', 'json']));
  assert.equal(app.spec.helmReleaseRef.name, 'extra');
  assert.deepEqual(app.spec.kustomizationRef, { name: 'webapp', namespace: 'flux-system' });
  await page.click('#created-app');
  await page.waitForURL(`${server.url}/apps/${ns}/extra`);
  await page.close();

  // The same through the REST API, as the caller: refused for the viewer, created for the operator.
  kubectl(['delete', 'managedapp', '-n', ns, 'extra', '--wait=true']);
  const as = (token) => ({ authorization: `Bearer ${token}`, 'content-type': 'application/json' });
  const body = JSON.stringify({ namespace: ns, helmRelease: 'extra' });
  const operatorToken = await idToken(sandbox.DEMO_USER);
  const refused = [
    [await fetch(`${server.url}/api/v1/apps`, { method: 'POST', headers: as(await idToken(sandbox.VIEWER_USER)), body }), 403],
    [await fetch(`${server.url}/api/v1/apps`, { method: 'POST', headers: as(operatorToken), body: JSON.stringify({ namespace: ns }) }), 422],
    [await fetch(`${server.url}/api/v1/apps`, {
      method: 'POST', headers: as(operatorToken), body: JSON.stringify({ namespace: ns, helmRelease: 'no-such-release' }),
    }), 404],
  ];
  for (const [res, status] of refused) {
    assert.equal(res.status, status, await res.clone().text());
    assert.equal(typeof (await res.json()).error, 'string');
  }
  assert.equal(JSON.parse(kubectl(['get', 'managedapps', '-n', ns, '-o', 'json'])).items.length, 0, 'nothing created');
  const created = await fetch(`${server.url}/api/v1/apps`, { method: 'POST', headers: as(operatorToken), body });
  assert.equal(created.status, 201, await created.clone().text());
  assert.equal((await created.json()).name, 'extra');
  const made = JSON.parse(kubectl(['get', 'managedapp', '-n', ns, 'extra', '-o', 'json']));
  assert.deepEqual(made.spec.kustomizationRef, { name: 'webapp', namespace: 'flux-system' });
});

test('snapshots: listed with their upgrade; the viewer may not delete one; the operator deletes it after confirming', async () => {
  const ns = 'fluxup-snapshots';
  kubectl(['apply', '--server-side', '--force-conflicts', '-f', '-'], JSON.stringify({ apiVersion: 'v1', kind: 'Namespace', metadata: { name: ns } }));
  // One of FluxUp's snapshots, as the upgrade controller labels them (of a claim that does not
  // exist: it never becomes ready, which does not matter here).
  kubectl(['apply', '--server-side', '--force-conflicts', '-f', '-'], JSON.stringify({
    apiVersion: 'snapshot.storage.k8s.io/v1', kind: 'VolumeSnapshot',
    metadata: { name: 'before-up-1', namespace: ns,
      labels: { 'fluxup.dev/managed-app': 'db', 'fluxup.dev/upgrade-request': 'db-up-1' } },
    spec: { source: { persistentVolumeClaimName: 'gone' }, volumeSnapshotClassName: sandbox.CSI_SNAPSHOT_CLASS },
  }));
  const row = `#snapshot-${ns}-before-up-1`;
  const exists = () => kubectl(['get', 'volumesnapshots', '-n', ns, '-o', 'name']).includes('before-up-1');

  const seen = await viewer.newPage();
  await seen.goto(`${server.url}/snapshots`);
  await seen.waitForSelector('[data-hydrated="true"]');
  await seen.waitForSelector(row);
  assert.match(await seen.locator(row).textContent(), /db-up-1/);
  await seen.locator(`${row} button.delete`).click();
  await seen.locator(`${row} button.confirm-delete`).click();
  await seen.waitForSelector('[role="alert"]');
  assert.match(await seen.locator('[role="alert"]').textContent(), /cannot delete resource "volumesnapshots"/);
  assert.ok(exists(), 'the viewer deleted nothing');
  await seen.close();

  const page = await operator.newPage();
  await page.goto(`${server.url}/snapshots`);
  await page.waitForSelector('[data-hydrated="true"]');
  await page.locator(`${row} button.delete`).click();
  await page.locator(`${row} button.confirm-delete`).click();
  await until('the snapshot to be gone', async () => ({ ok: !exists(), value: 'still there' }));
  await page.waitForSelector(row, { state: 'detached' });
  await page.close();
});

test('settings: who you are, how logins work, and the notification sinks without their secrets', async () => {
  kubectl(['apply', '--server-side', '--force-conflicts', '-f', '-'], JSON.stringify({
    apiVersion: 'v1', kind: 'ConfigMap', metadata: { name: 'fluxup-notifications', namespace: 'fluxup-system' },
    data: { 'sinks.yaml': '- {name: team-chat, type: slack, address: "https://hooks.example/secret-path", events: [UpgradeFailed]}\n' },
  }));
  try {
    const page = await operator.newPage();
    await page.goto(`${server.url}/settings`);
    await page.waitForSelector('#sinks');
    assert.equal(await page.locator('#settings-user').textContent(), kubernetesUser(sandbox.DEMO_USER));
    assert.match(await page.locator('#settings-auth').textContent(), /OIDC/);
    const sinks = await page.locator('#sinks').textContent();
    assert.match(sinks, /team-chat/);
    assert.match(sinks, /slack/);
    assert.match(sinks, /UpgradeFailed/);
    assert.doesNotMatch(await page.content(), /secret-path/, 'addresses are never shown');

    // Changing a sink's filters is done as the person: without rights on the ConfigMap, refused.
    const sinksText = () => JSON.parse(kubectl(['get', 'configmap', '-n', 'fluxup-system', 'fluxup-notifications', '-o', 'json'])).data['sinks.yaml'];
    const untouched = sinksText();
    const row = '#sinks [data-sink="team-chat"]';
    const change = async () => {
      await page.locator(`${row} summary`).click();
      await page.locator(`${row} input[data-event="UpgradeSucceeded"]`).check();
      await page.locator(`${row} input[name="namespaces"]`).fill('webapp');
      await page.locator(`${row} button.save-sink`).click();
    };
    await change();
    await page.waitForSelector(`${row} [role="alert"]`);
    assert.match(await page.locator(`${row} [role="alert"]`).textContent(), /forbidden|may not|cannot/i);
    assert.equal(sinksText(), untouched, 'nothing written');
    const api = `${server.url}/api/v1/settings`;
    const as = (token) => ({ authorization: `Bearer ${token}`, 'content-type': 'application/json' });
    const refused = await fetch(api, { method: 'PUT', headers: as(await idToken(sandbox.VIEWER_USER)),
      body: JSON.stringify({ sinks: [{ name: 'team-chat', events: [] }] }) });
    assert.equal(refused.status, 403, await refused.clone().text());

    // Given update on that ConfigMap, the same person changes it; the address stays as it was.
    const user = kubernetesUser(sandbox.DEMO_USER);
    kubectl(['apply', '--server-side', '--force-conflicts', '-f', '-'], JSON.stringify({ apiVersion: 'v1', kind: 'List', items: [
      { apiVersion: 'rbac.authorization.k8s.io/v1', kind: 'Role', metadata: { name: 'notifications-editor', namespace: 'fluxup-system' },
        rules: [{ apiGroups: [''], resources: ['configmaps'], resourceNames: ['fluxup-notifications'], verbs: ['get', 'update'] }] },
      { apiVersion: 'rbac.authorization.k8s.io/v1', kind: 'RoleBinding', metadata: { name: 'notifications-editor', namespace: 'fluxup-system' },
        roleRef: { apiGroup: 'rbac.authorization.k8s.io', kind: 'Role', name: 'notifications-editor' },
        subjects: [{ apiGroup: 'rbac.authorization.k8s.io', kind: 'User', name: user }] },
    ] }));
    const bad = await fetch(api, { method: 'PUT', headers: as(await idToken(sandbox.DEMO_USER)),
      body: JSON.stringify({ sinks: [{ name: 'team-chat', events: ['Everything'] }] }) });
    assert.equal(bad.status, 422, await bad.clone().text());
    assert.equal(sinksText(), untouched, 'a refused change writes nothing');
    await page.goto(`${server.url}/settings`);
    await page.waitForSelector('[data-hydrated="true"]');
    const reloaded = page.waitForEvent('load');
    await change();
    await reloaded;
    await page.waitForSelector('#sinks');
    assert.equal(await page.locator(`${row} [data-field="events"]`).textContent(), 'UpgradeFailed, UpgradeSucceeded');
    assert.equal(await page.locator(`${row} [data-field="namespaces"]`).textContent(), 'webapp');
    assert.match(sinksText(), /secret-path/, 'the address is kept');
    await page.close();
  } finally {
    kubectl(['delete', 'configmap', '-n', 'fluxup-system', 'fluxup-notifications', '--ignore-not-found']);
    kubectl(['delete', 'role,rolebinding', '-n', 'fluxup-system', 'notifications-editor', '--ignore-not-found']);
  }
});

test('badges per part, health and state columns, and the summary that filters the list', async () => {
  const get = () => JSON.parse(kubectl(['get', 'managedapp', '-n', NS, APP, '-o', 'json']));
  const current = await until('the app to know its chart and image', async () => {
    const v = get().status?.currentVersion;
    return { ok: Boolean(v?.chart && v?.images?.[0]?.tag), value: v };
  });
  // Renovate's findings, written as its ingest would: a chart update (its size depends on the
  // version Flux runs now, see sandbox/demo/charts/versions) and an image major.
  const next = { '1.0.0': ['1.0.1', 'patch'], '1.0.1': ['1.1.0', 'minor'], '1.1.0': ['2.0.0', 'major'] };
  const [chartTarget, chartKind] = next[current.chart] ?? assert.fail(`no demo chart after ${current.chart}`);
  const image = current.images[0];
  const imageTarget = `${Number(image.tag.split('.')[0]) + 1}.0.0`;
  const patch = (detected) => kubectl(['patch', 'managedapp', '-n', NS, APP, '--subresource=status',
    '--type=merge', '-p', JSON.stringify({ status: { detected } })]);
  patch({
    source: 'dashboard-test',
    updates: [
      { name: 'chart', current: current.chart, version: chartTarget, updateType: chartKind },
      { name: image.name, current: image.tag, version: imageTarget, updateType: 'major' },
    ],
  });
  try {
    const update = await until('the operator to offer both parts', async () => {
      const u = get().status?.availableUpdate;
      return { ok: u?.chart === chartTarget && u?.images?.length === 1, value: u };
    });
    // The status says each part's size and the largest (what `kubectl get mapp` shows).
    assert.equal(update.chartUpdateType, chartKind);
    assert.deepEqual(update.imageUpdateTypes, [{ name: image.name, updateType: 'major' }]);
    assert.equal(update.updateType, 'major');

    const page = await operator.newPage();
    const row = page.locator(`#app-${NS}-${APP}`);
    const chartPart = row.locator('[data-field="available-part"]');
    // The dashboard reads from its watch caches: reload until they have the new status.
    await until('the page to offer the chart update', async () => {
      await page.goto(server.url);
      await page.waitForSelector('[data-hydrated="true"]');
      const text = (await chartPart.count()) ? await chartPart.textContent() : '';
      return { ok: text.includes(chartTarget), value: text };
    });
    // The chart's badge beside the chart version, the image's beside the image.
    assert.equal(await chartPart.locator('[data-update-type]').getAttribute('data-update-type'), chartKind);
    const imagePart = row.locator('[data-field="also"]', { hasText: `${image.name}:${imageTarget}` });
    assert.equal(await imagePart.locator('[data-update-type]').getAttribute('data-update-type'), 'major');
    // The largest is marked as such, in words, once.
    assert.equal(await row.locator('[data-largest="true"]').count(), 1);
    const largestPart = chartKind === 'major' ? chartPart : imagePart;
    assert.equal(await largestPart.locator('[data-largest="true"]').count(), 1);
    assert.match(await largestPart.textContent(), /largest of this app/);

    // Health from the Ready condition; the state, in words, in its own column.
    const ready = get().status.conditions.find((c) => c.type === 'Ready');
    assert.equal(
      (await row.locator('[data-field="health"]').textContent()).trim(),
      ready.status === 'True' ? '✓ healthy' : '✗ not healthy',
    );
    const state = row.locator('[data-field="state"] [data-state]');
    const [word, words] = ready.status === 'True' ? ['UpdateAvailable', 'update available'] : ['Degraded', 'degraded'];
    assert.equal(await state.getAttribute('data-state'), word);
    assert.equal((await state.textContent()).trim(), words);
    assert.doesNotMatch(await row.textContent(), /UpdateAvailable|UpToDate/, 'no kubectl words in the row');

    // The summary counts the app by its largest update; its button filters the list and,
    // pressed again, shows every app.
    const total = await page.locator('#apps tbody tr').count();
    const major = page.locator('#summary-major');
    assert.match(await major.textContent(), /^\d+ major$/);
    await major.click();
    assert.equal(await major.getAttribute('aria-pressed'), 'true');
    await page.waitForFunction(
      (n) => document.querySelectorAll('#apps tbody tr').length === n,
      Number((await major.textContent()).split(' ')[0]),
    );
    assert.equal(await row.count(), 1, 'the app with a major update stays');
    assert.deepEqual(await accessibilityViolations(page), [], 'the filtered page meets WCAG 2.1 AA');
    await major.click();
    await page.waitForFunction((n) => document.querySelectorAll('#apps tbody tr').length === n, total);
    assert.match(await page.locator('#summary-running').textContent(), /^\d+ operations? running$/);
    await page.close();
  } finally {
    patch(null);
  }
});

test('health counts the workloads Flux installed, and the app page lists each', async () => {
  const get = () => JSON.parse(kubectl(['get', 'managedapp', '-n', NS, APP, '-o', 'json']));
  // helm-controller labels what it installs as the HelmRelease's: the status finds the
  // chart's Deployment from those labels alone (this app snapshots no volumes).
  const status = await until('the status to list the release\'s workloads', async () => {
    const s = get().status;
    return { ok: (s?.workloads?.length ?? 0) > 0, value: s };
  });
  const release = get().spec.helmReleaseRef.name;
  const deployment = JSON.parse(kubectl(['get', 'deployment', '-n', NS, '-l',
    `helm.toolkit.fluxcd.io/name=${release},helm.toolkit.fluxcd.io/namespace=${NS}`, '-o', 'json'])).items[0];
  assert.ok(deployment, 'the release has a Deployment');
  const listed = status.workloads.find((w) => w.name === `${NS}/${deployment.metadata.name}`);
  assert.ok(listed, `status lists ${NS}/${deployment.metadata.name}`);
  assert.equal(listed.replicas, deployment.spec.replicas);

  const page = await operator.newPage();
  await page.goto(`${server.url}/apps/${NS}/${APP}`);
  await page.waitForSelector('[data-hydrated="true"]');
  const lines = await page.locator('#workloads li').allTextContents();
  assert.deepEqual(
    lines.map((l) => l.trim()),
    status.workloads.map((w) => w.rolledOut
      ? `${w.kind} ${w.name}: ${w.readyReplicas} of ${w.replicas} replicas ready`
      : `${w.kind} ${w.name}: its latest change is not rolled out yet`),
  );
  const ready = status.conditions.find((c) => c.type === 'Ready');
  const allReady = status.workloads.every((w) => w.rolledOut && w.readyReplicas >= w.replicas);
  if (!allReady) assert.equal(ready.reason, 'WorkloadsNotReady');
  await page.close();
});

test('skip and pin: stored in the spec, held back in status and on the page, and undone there', async () => {
  const get = () => JSON.parse(kubectl(['get', 'managedapp', '-n', NS, APP, '-o', 'json']));
  const current = await until('the app to know its chart', async () => {
    const v = get().status?.currentVersion;
    return { ok: Boolean(v?.chart), value: v };
  });
  // A version outside the running minor, so that "stay on" this minor holds it back.
  const next = { '1.0.0': '1.1.0', '1.0.1': '1.1.0', '1.1.0': '2.0.0' };
  const target = next[current.chart] ?? assert.fail(`no demo chart after ${current.chart}`);
  const [major, minor] = current.chart.split('.');
  const patch = (detected) => kubectl(['patch', 'managedapp', '-n', NS, APP, '--subresource=status',
    '--type=merge', '-p', JSON.stringify({ status: { detected } })]);
  patch({ source: 'dashboard-test', updates: [{ name: 'chart', current: current.chart, version: target }] });
  const page = await operator.newPage();
  const open = async () => {
    await page.goto(`${server.url}/apps/${NS}/${APP}`);
    await page.waitForSelector('[data-hydrated="true"]');
  };
  // Each button stores the change and the page reloads itself.
  const press = async (selector) => {
    const reloaded = page.waitForEvent('load');
    await page.click(selector);
    await reloaded;
  };
  const offered = (what) => until(`the operator and the page to offer ${target} ${what}`, async () => {
    const u = get().status?.availableUpdate;
    if (u?.chart !== target) return { ok: false, value: u };
    await open();
    const text = await page.locator('#available-version').textContent();
    return { ok: text.includes(target), value: text };
  });
  const heldBack = (why, words) => until(`${target} to be held back (${why})`, async () => {
    const app = get();
    const held = (app.status?.heldBack ?? []).find((h) => h.name === 'chart' && h.version === target);
    if (!held || app.status?.availableUpdate?.chart) return { ok: false, value: app.status?.heldBack };
    await open();
    const line = await page.locator(`#held-back [data-held="chart ${target}"]`).textContent().catch(() => '');
    const available = await page.locator('#available-version').textContent();
    return { ok: line.includes(words) && available.includes('up to date'), value: { held, line, spec: app.spec.versionPolicy } };
  });
  try {
    await offered('at first');

    // Skip: kubectl sees what the person chose, in the spec, and the controller holds it back.
    await press('#skip-version');
    const skipped = await heldBack('skipped', 'skipped by a person');
    assert.deepEqual(skipped.spec.chart.skip, [target]);
    await press(`#held-back [data-held="chart ${target}"] [data-action=unskip]`);
    await offered('once offered again');
    assert.deepEqual(get().spec.versionPolicy?.chart?.skip ?? [], []);

    // Stay on this minor: a range in the spec, the update held back as outside it.
    assert.equal(await page.locator('#chart-pin [data-action=stay-minor]').textContent(), `Stay on ${major}.${minor}.x`);
    await press('#chart-pin [data-action=stay-minor]');
    const pinned = await heldBack('pinned', `outside the range it is pinned to (${major}.${minor}.x)`);
    assert.equal(pinned.spec.chart.constraint, `${major}.${minor}.x`);
    assert.equal(await page.locator('#chart-pin [data-field=range]').textContent(), `${major}.${minor}.x`);
    await press('#chart-pin [data-action=unpin]');
    await offered('once unpinned');
    assert.equal(get().spec.versionPolicy?.chart?.constraint, undefined);
  } finally {
    await page.close();
    kubectl(['patch', 'managedapp', '-n', NS, APP, '--type=merge', '-p',
      JSON.stringify({ spec: { versionPolicy: { chart: { skip: null, constraint: null } } } })]);
    patch(null);
  }
});
