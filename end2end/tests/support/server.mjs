// Starts the fluxup binary on a free port for a browser test and stops it afterwards.
import { spawn } from 'node:child_process';
import { createServer } from 'node:net';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../../..');

function freePort() {
  return new Promise((resolve, reject) => {
    const srv = createServer();
    srv.listen(0, '127.0.0.1', () => {
      const { port } = srv.address();
      srv.close(() => resolve(port));
    });
    srv.on('error', reject);
  });
}

/**
 * Starts `fluxup serve` with the site cargo-leptos built; resolves once /readyz answers. `env`
 * adds or replaces variables (e.g. a KUBECONFIG and FLUXUP_CONTROLLERS for tests on a cluster);
 * `port` is a fixed port (one registered as a redirect URI with the OIDC issuer), else a free one.
 */
export async function startServer(env = {}, port = undefined) {
  port ??= await freePort();
  const bin = process.env.FLUXUP_BIN ?? path.join(root, 'target/debug/fluxup');
  const child = spawn(bin, ['serve'], {
    cwd: root,
    env: {
      ...process.env,
      // The dashboard alone, without a cluster, unless the test says otherwise.
      FLUXUP_CONTROLLERS: 'false',
      KUBECONFIG: '/nonexistent',
      // No logins unless the test sets up OIDC.
      FLUXUP_NO_AUTH: 'true',
      FLUXUP_LISTEN: `127.0.0.1:${port}`,
      // /metrics on a port of its own; any free one, so servers side by side do not clash.
      FLUXUP_METRICS_LISTEN: '127.0.0.1:0',
      LEPTOS_SITE_ROOT: process.env.LEPTOS_SITE_ROOT ?? path.join(root, 'target/site'),
      LEPTOS_OUTPUT_NAME: 'fluxup',
      ...env,
    },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let log = '';
  child.stdout.on('data', (d) => (log += d));
  child.stderr.on('data', (d) => (log += d));
  const url = `http://127.0.0.1:${port}`;
  const deadline = Date.now() + 20_000;
  for (;;) {
    if (child.exitCode !== null) throw new Error(`fluxup exited early:\n${log}`);
    try {
      const res = await fetch(`${url}/readyz`);
      if (res.ok) break;
    } catch {
      // not listening yet
    }
    if (Date.now() > deadline) {
      child.kill('SIGKILL');
      throw new Error(`fluxup not ready after 20 s:\n${log}`);
    }
    await new Promise((r) => setTimeout(r, 100));
  }
  return {
    url,
    log: () => log,
    async stop() {
      child.kill('SIGTERM');
      await new Promise((r) => child.once('exit', r));
    },
  };
}
