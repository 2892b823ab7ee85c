// Browser suite: the built web app, served by the real API (SQLite in a temp folder, tiny
// random-weight bundles), driven in headless Chromium through playwright-core.
//
//   npm run test:e2e            builds the app first when dist/ is missing or older than src/
//   E2E_SKIP_BUILD=1            use dist/ as it is
//   CHROMIUM_PATH=/usr/bin/chromium, SPONDYSCAN_PYTHON=../.venv/bin/python, E2E_KEEP=1 (keep temp files)
//
// Screenshots of every page go to frontend/test-artifacts/ (git-ignored). Any console error,
// page error or unexpected failed request fails the suite.
import { spawn, spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, readdirSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { chromium } from 'playwright-core';
import { makeSuite } from './steps.mjs';

const FRONTEND = resolve(dirname(fileURLToPath(import.meta.url)), '..');
const ROOT = resolve(FRONTEND, '..');
const DIST = join(FRONTEND, 'dist');
const ARTIFACTS = join(FRONTEND, 'test-artifacts');
const PYTHON = process.env.SPONDYSCAN_PYTHON ?? join(ROOT, '.venv', 'bin', 'python');
const CHROMIUM = process.env.CHROMIUM_PATH ?? '/usr/bin/chromium';
const KEEP = process.env.E2E_KEEP === '1';

function log(message) {
  process.stdout.write(`[e2e] ${message}\n`);
}

function newestMtime(path) {
  const stat = statSync(path);
  if (!stat.isDirectory()) return stat.mtimeMs;
  return readdirSync(path).reduce((max, name) => Math.max(max, newestMtime(join(path, name))), stat.mtimeMs);
}

function ensureBuild() {
  const index = join(DIST, 'index.html');
  if (process.env.E2E_SKIP_BUILD === '1') {
    if (!existsSync(index)) throw new Error('E2E_SKIP_BUILD=1 but frontend/dist is missing; run `npm run build`.');
    return;
  }
  const sources = [join(FRONTEND, 'src'), join(FRONTEND, 'index.html'), join(FRONTEND, 'public')];
  const stale = !existsSync(index) || sources.some((s) => existsSync(s) && newestMtime(s) > statSync(index).mtimeMs);
  if (!stale) return;
  log('building the web app (dist/ is missing or older than src/)');
  const build = spawnSync('npm', ['run', 'build'], { cwd: FRONTEND, stdio: 'inherit' });
  if (build.status !== 0) throw new Error('npm run build failed');
}

function freePort() {
  return new Promise((resolvePort, reject) => {
    const server = createServer();
    server.unref();
    server.on('error', reject);
    server.listen(0, '127.0.0.1', () => {
      const { port } = server.address();
      server.close(() => resolvePort(port));
    });
  });
}

function makeFixtures(tmp) {
  log('writing tiny random-weight bundles, a sample slice and a synthetic series');
  const result = spawnSync(
    PYTHON,
    [join(ROOT, 'tests', 'e2e', 'make_bundles.py'), join(tmp, 'models'), '--samples', join(tmp, 'samples')],
    { cwd: ROOT, encoding: 'utf-8', env: { ...process.env, TF_CPP_MIN_LOG_LEVEL: '2' } },
  );
  if (result.status !== 0) {
    throw new Error(`make_bundles.py failed:\n${result.stderr}\n${result.stdout}`);
  }
  const line = result.stdout.trim().split('\n').pop();
  const info = JSON.parse(line);
  // Files the non-image checks upload.
  writeFileSync(join(tmp, 'samples', 'notes.txt'), 'Patient notes: this is text, not an image.\n');
  const corrupt = Buffer.concat([
    Buffer.from([0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a]),
    Buffer.from('this is not really a PNG body'),
  ]);
  writeFileSync(join(tmp, 'samples', 'broken.png'), corrupt);
  return {
    sample: info.sample,
    notes: join(tmp, 'samples', 'notes.txt'),
    corrupt: join(tmp, 'samples', 'broken.png'),
    noise: info.noise,
    seriesFiles: info.series_files,
    volume: info.volume,
    domainReference: Boolean(info.domain_reference),
  };
}

async function startApi(tmp, port) {
  mkdirSync(join(tmp, 'data'), { recursive: true });
  const env = {
    ...process.env,
    SPONDYSCAN_ENVIRONMENT: 'test',
    SPONDYSCAN_SECRET_KEY: 'e2e-secret-key-0123456789abcdef0123',
    SPONDYSCAN_DATA_DIR: join(tmp, 'data'),
    SPONDYSCAN_DATABASE_URL: `sqlite+aiosqlite:///${join(tmp, 'data', 'e2e.db')}`,
    SPONDYSCAN_MODELS_DIR: join(tmp, 'models'),
    SPONDYSCAN_SPA_DIR: DIST,
    SPONDYSCAN_HOST: '127.0.0.1',
    SPONDYSCAN_PORT: String(port),
    SPONDYSCAN_ARGON2_TIME_COST: '1',
    SPONDYSCAN_ARGON2_MEMORY_KIB: '8192',
    SPONDYSCAN_FAITHFULNESS_STEPS: '4',
    TF_CPP_MIN_LOG_LEVEL: '2',
    KERAS_BACKEND: 'tensorflow',
  };
  const logPath = join(tmp, 'api.log');
  const out = [];
  const child = spawn(
    PYTHON,
    ['-m', 'uvicorn', 'backend.main:create_app', '--factory', '--host', '127.0.0.1', '--port', String(port), '--log-level', 'warning'],
    { cwd: ROOT, env, stdio: ['ignore', 'pipe', 'pipe'] },
  );
  child.stdout.on('data', (d) => out.push(d));
  child.stderr.on('data', (d) => out.push(d));
  const base = `http://127.0.0.1:${port}`;
  const deadline = Date.now() + 120_000;
  while (Date.now() < deadline) {
    if (child.exitCode !== null) break;
    try {
      const res = await fetch(`${base}/health/ready`);
      if (res.ok) {
        log(`API ready at ${base}`);
        return { base, child, output: () => Buffer.concat(out).toString('utf-8'), logPath };
      }
    } catch {
      // not listening yet
    }
    await new Promise((r) => setTimeout(r, 500));
  }
  child.kill('SIGTERM');
  throw new Error(`the API did not become ready:\n${Buffer.concat(out).toString('utf-8')}`);
}

async function main() {
  if (!existsSync(CHROMIUM)) {
    throw new Error(`Chromium not found at ${CHROMIUM}; install Debian's chromium (apt-get install -y chromium) or set CHROMIUM_PATH.`);
  }
  if (!existsSync(PYTHON)) throw new Error(`Python not found at ${PYTHON}; run \`make setup\` or set SPONDYSCAN_PYTHON.`);
  ensureBuild();
  rmSync(ARTIFACTS, { recursive: true, force: true });
  mkdirSync(ARTIFACTS, { recursive: true });
  const tmp = mkdtempSync(join(tmpdir(), 'spondyscan-e2e-'));
  let api;
  let browser;
  let failed = false;
  try {
    const files = makeFixtures(tmp);
    api = await startApi(tmp, await freePort());
    browser = await chromium.launch({
      executablePath: CHROMIUM,
      headless: true,
      args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-background-networking', '--disable-component-update'],
    });
    const suite = makeSuite({ base: api.base, files, artifacts: ARTIFACTS, log });
    failed = !(await suite.run(browser));
  } catch (error) {
    failed = true;
    process.stderr.write(`[e2e] ${error instanceof Error ? error.stack : String(error)}\n`);
  } finally {
    await browser?.close().catch(() => {});
    if (api) {
      api.child.kill('SIGTERM');
      await new Promise((r) => {
        const timer = setTimeout(() => {
          api.child.kill('SIGKILL');
          r();
        }, 5000);
        api.child.once('exit', () => {
          clearTimeout(timer);
          r();
        });
      });
      writeFileSync(join(ARTIFACTS, 'api.log'), api.output());
    }
    if (KEEP) log(`kept ${tmp}`);
    else rmSync(tmp, { recursive: true, force: true });
  }
  log(failed ? 'FAILED' : 'passed');
  log(`screenshots in ${ARTIFACTS}`);
  process.exit(failed ? 1 : 0);
}

await main();
