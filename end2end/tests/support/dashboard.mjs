// FluxUp's dashboard on the full sandbox with Dex logins: the demo user bound to the
// `fluxup-operator` ClusterRole, the viewer to `fluxup-viewer`, a browser context logged in as
// each. The server listens on the port registered with Dex as a redirect URI, so only one test
// file may use it at a time (scripts/test runs the files one after another).
import { readFileSync } from 'node:fs';
import path from 'node:path';
import assert from 'node:assert/strict';
import { startServer } from './server.mjs';
import { launchBrowser } from './browser.mjs';
import { kubectl, outboundAllow, root, sandbox, shippedIdentities } from './sandbox.mjs';

/**
 * The Kubernetes user FluxUp acts as for a Dex login: its email with FluxUp's default
 * `--oidc-username-prefix` (`oidc:`), so no login can name one of the cluster's own users.
 */
export const kubernetesUser = (email) => `oidc:${email}`;

/** Starts FluxUp with OIDC through the sandbox's Dex and logs both users in. */
export async function startDashboard() {
  kubectl(['apply', '--server-side', '--force-conflicts', '-f', path.join(root, 'config/rbac/viewer_role.yaml'),
    '-f', path.join(root, 'config/rbac/operator_role.yaml'),
    '-f', path.join(root, 'config/rbac/flux_suspend_role.yaml')]);
  // The demo apps' Kustomizations live in flux-system: the operator may pause them (as
  // `flux suspend` would need), so FluxUp may hold them for that person.
  kubectl(['apply', '--server-side', '--force-conflicts', '-f', '-'], JSON.stringify({
    apiVersion: 'rbac.authorization.k8s.io/v1', kind: 'RoleBinding',
    metadata: { name: 'fluxup-test-operator-suspends', namespace: 'flux-system' },
    roleRef: { apiGroup: 'rbac.authorization.k8s.io', kind: 'ClusterRole', name: 'fluxup-flux-suspend' },
    subjects: [{ apiGroup: 'rbac.authorization.k8s.io', kind: 'User', name: kubernetesUser(sandbox.DEMO_USER) }],
  }));
  for (const [name, role, user] of [
    ['fluxup-test-operator', 'fluxup-operator', sandbox.DEMO_USER],
    ['fluxup-test-viewer', 'fluxup-viewer', sandbox.VIEWER_USER],
  ]) {
    kubectl(['apply', '--server-side', '--force-conflicts', '-f', '-'], JSON.stringify({
      apiVersion: 'rbac.authorization.k8s.io/v1', kind: 'ClusterRoleBinding',
      metadata: { name },
      roleRef: { apiGroup: 'rbac.authorization.k8s.io', kind: 'ClusterRole', name: role },
      subjects: [{ apiGroup: 'rbac.authorization.k8s.io', kind: 'User', name: kubernetesUser(user) }],
    }));
  }
  const port = Number(sandbox.FLUXUP_TEST_PORT);
  // The controllers and the dashboard as their shipped ServiceAccounts, never as cluster-admin.
  const identities = shippedIdentities();
  const server = await startServer({
    KUBECONFIG: identities['fluxup-controller'],
    FLUXUP_DASHBOARD_KUBECONFIG: identities['fluxup-dashboard'],
    FLUXUP_CONTROLLERS: 'true',
    POD_NAMESPACE: 'fluxup-system',
    FLUXUP_LEASE_NAME: 'fluxup-dashboard-test',
    // The sandbox's servers listen on 127.0.0.1, which FluxUp refuses unless told.
    FLUXUP_OUTBOUND_ALLOW: outboundAllow,
    FLUXUP_NO_AUTH: 'false',
    FLUXUP_OIDC_ISSUER: sandbox.OIDC_ISSUER,
    FLUXUP_OIDC_CLIENT_ID: sandbox.OIDC_CLIENT_ID,
    FLUXUP_OIDC_CLIENT_SECRET: sandbox.OIDC_CLIENT_SECRET,
    FLUXUP_PUBLIC_URL: `http://127.0.0.1:${port}`,
  }, port);
  const browser = await launchBrowser();
  const dashboard = { server, browser };
  dashboard.operator = await loggedIn(dashboard, sandbox.DEMO_USER);
  dashboard.viewer = await loggedIn(dashboard, sandbox.VIEWER_USER);
  dashboard.stop = async () => {
    await dashboard.operator?.close();
    await dashboard.viewer?.close();
    await browser.close();
    await server.stop();
  };
  return dashboard;
}

/**
 * A browser context logged in as `user` through Dex's login form. `options` are Playwright's
 * context options (a phone's viewport, say).
 */
export async function loggedIn({ server, browser }, user, options = {}) {
  const context = await browser.newContext(options);
  const page = await context.newPage();
  await page.goto(server.url);
  // FluxUp sends us to Dex; Dex may first ask which connector.
  await page.waitForURL(/\/dex\//);
  if (await page.locator('#login').count() === 0) {
    await page.click('text=Log in with Email');
  }
  await page.fill('#login', user);
  await page.fill('#password', sandbox.DEMO_PASSWORD);
  await page.click('#submit-login');
  await page.waitForURL(`${server.url}/`);
  await page.waitForSelector('#user');
  assert.equal(await page.locator('#user').textContent(), kubernetesUser(user));
  await page.close();
  return context;
}

const axeSource = readFileSync(path.join(root, 'node_modules/axe-core/axe.min.js'), 'utf8');

/** axe-core's WCAG 2.1 A and AA violations on the page as it is now, one line each. */
export async function accessibilityViolations(page) {
  await page.evaluate(axeSource);
  const result = await page.evaluate(() => window.axe.run(document, {
    runOnly: { type: 'tag', values: ['wcag2a', 'wcag2aa', 'wcag21a', 'wcag21aa'] },
  }));
  return result.violations.map((v) =>
    `${v.id} (${v.impact}): ${v.help} — ${v.nodes.map((n) => n.target.join(' ')).slice(0, 3).join(', ')}`);
}
