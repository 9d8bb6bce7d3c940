// The full-profile test sandbox, for browser tests and benchmarks: its settings (env files),
// kubectl against it, and FluxUp's CRDs, the demo fleet and an app of the caller's own on it.
import { execFileSync } from 'node:child_process';
import { readFileSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { startServer } from './server.mjs';

export const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../../..');
export const state = process.env.SANDBOX_FULL_STATE ?? path.join(root, 'target/test-sandbox-full');

/** The sandbox's settings (`env` and `env.full`), as KEY → value. */
export function sandboxEnv() {
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

export const sandbox = sandboxEnv();

/** The sandbox's chart repository, registry and Gitea listen on 127.0.0.1, which FluxUp refuses
 * to fetch from unless told: its `FLUXUP_OUTBOUND_ALLOW`. */
export const outboundAllow = [sandbox.HELM_REPO_URL, sandbox.REGISTRY_HOST, sandbox.REGISTRY_AUTH_HOST, sandbox.GITEA_URL]
  .filter(Boolean).join(',');

/** Runs kubectl against the sandbox; `input` goes to its stdin. */
export const kubectl = (args, input) =>
  execFileSync(sandbox.SANDBOX_KUBECTL, ['--kubeconfig', sandbox.KUBECONFIG, ...args], {
    input,
    encoding: 'utf8',
  });

/**
 * FluxUp's CRDs and admission policy, the demo fleet (seeded as the Rust scenario tests do),
 * and a ManagedApp `name` of the caller's own for the demo's webapp, naming the Git file of its
 * version (so no Renovate run is needed).
 */
export function demoApp(name) {
  kubectl(['apply', '--server-side', '--force-conflicts', '-k', path.join(root, 'config/crd')]);
  kubectl(['wait', '--for', 'condition=Established', '--timeout=30s', 'crd',
    'managedapps.fluxup.dev', 'upgraderequests.fluxup.dev', 'rollbackrequests.fluxup.dev']);
  kubectl(['apply', '--server-side', '--force-conflicts', '-k', path.join(root, 'config/admission')]);
  execFileSync(path.join(root, 'sandbox/demo/seed'), { env: { ...process.env, SANDBOX_STATE: state } });
  kubectl(['apply', '--server-side', '--force-conflicts', '-f', '-'], JSON.stringify({
    apiVersion: 'fluxup.dev/v1alpha1', kind: 'ManagedApp',
    metadata: { name, namespace: 'webapp' },
    spec: {
      helmReleaseRef: { name: 'webapp' },
      kustomizationRef: { name: 'webapp', namespace: 'flux-system' },
      versionPolicy: { chart: { git: { file: 'apps/webapp/helmrelease.yaml' } } },
    },
  }));
}

/**
 * `demoApp(name)`, resolved once by FluxUp's controllers, which are then stopped: for tests that
 * run FluxUp without controllers and write a request's status themselves.
 */
export async function resolvedDemoApp(name) {
  demoApp(name);
  const resolver = await startServer({
    KUBECONFIG: sandbox.KUBECONFIG, FLUXUP_CONTROLLERS: 'true', FLUXUP_OUTBOUND_ALLOW: outboundAllow,
  });
  try {
    await until('the app to be resolved', async () => {
      const out = kubectl(['get', 'managedapp', '-n', 'webapp', name, '-o', 'jsonpath={.status.resolved.chartSource}']);
      return { ok: out.length > 0, value: out };
    });
  } finally {
    await resolver.stop();
  }
}

/** Polls until `check` returns `{ ok: true, value }`, or fails with what it last saw. */
export async function until(what, check, timeoutMs = 60_000) {
  const deadline = Date.now() + timeoutMs;
  let last;
  for (;;) {
    last = await check();
    if (last && last.ok) return last.value;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}; last: ${JSON.stringify(last)}`);
    await new Promise((r) => setTimeout(r, 200));
  }
}

/**
 * FluxUp's shipped identities (config/rbac: the ServiceAccounts `fluxup-controller` and
 * `fluxup-dashboard` in `fluxup-system`, their roles and bindings), applied to the sandbox, and a
 * kubeconfig for each with a token from the TokenRequest API (`kubectl create token`).
 */
export function shippedIdentities() {
  kubectl(['apply', '--server-side', '--force-conflicts', '-f', '-'], JSON.stringify({
    apiVersion: 'v1', kind: 'Namespace', metadata: { name: 'fluxup-system' },
  }));
  kubectl(['apply', '--server-side', '--force-conflicts', '-k', path.join(root, 'config/rbac')]);
  const admin = JSON.parse(kubectl(['config', 'view', '--raw', '--minify', '--flatten', '-o', 'json']));
  const out = {};
  for (const account of ['fluxup-controller', 'fluxup-dashboard']) {
    const token = kubectl(['create', 'token', account, '-n', 'fluxup-system', '--duration=24h']).trim();
    const file = path.join(state, `kubeconfig-${account}`);
    writeFileSync(file, JSON.stringify({
      apiVersion: 'v1', kind: 'Config',
      clusters: admin.clusters,
      users: [{ name: account, user: { token } }],
      contexts: [{ name: account, context: { cluster: admin.clusters[0].name, user: account } }],
      'current-context': account,
    }));
    out[account] = file;
  }
  return out;
}
