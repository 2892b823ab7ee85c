// The browser scenarios, in order. Each step may list the HTTP statuses it provokes on purpose
// (a wrong password is a 401); every other console error or failed request fails the step.
import { readFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { basename, join } from 'node:path';

// axe-core runs inside each page the suite photographs (evaluated through the debugging
// protocol, so the page's Content-Security-Policy does not block it).
const AXE_SOURCE = readFileSync(createRequire(import.meta.url).resolve('axe-core/axe.min.js'), 'utf-8');
const AXE_BLOCKING = new Set(['serious', 'critical']);

const EMAIL = `reader.${Date.now()}@example.org`;
const PASSWORD = 'a long passphrase for e2e';
const NEW_PASSWORD = 'another long passphrase for e2e';
const TIMEOUT = 30_000;
const ANALYSIS_TIMEOUT = 120_000;

class StepError extends Error {}

function assert(condition, message) {
  if (!condition) throw new StepError(message);
}

export function makeSuite({ base, files, artifacts, log }) {
  // The web app lives under /app/; the API owns every other path.
  const app = `${base}/app`;
  const problems = [];
  let current = { name: 'setup', allow: [] };
  let resultId = null;
  let resultStatus = null;
  let studyId = null;
  let shot = 0;
  let axeChecked = 0;

  function watch(page) {
    page.on('console', (msg) => {
      if (msg.type() !== 'error') return;
      const text = msg.text();
      const status = /status of (\d{3})/.exec(text)?.[1];
      if (status && current.allow.includes(Number(status))) return;
      problems.push(`[${current.name}] console error: ${text}`);
    });
    page.on('pageerror', (error) => problems.push(`[${current.name}] page error: ${error.message}`));
    page.on('requestfailed', (request) => {
      const failure = request.failure()?.errorText ?? '';
      // Cancelled fetches (a query dropped on navigation) and revoked blob: URLs are normal.
      if (failure.includes('ERR_ABORTED') || request.url().startsWith('blob:')) return;
      problems.push(`[${current.name}] request failed: ${request.method()} ${request.url()} ${failure}`);
    });
    page.on('response', (response) => {
      const status = response.status();
      if (status >= 400 && !current.allow.includes(status)) {
        problems.push(`[${current.name}] HTTP ${status}: ${response.request().method()} ${response.url()}`);
      }
    });
  }

  /** axe-core on the page as it is now: serious or critical violations fail the step. */
  async function checkAccessibility(page, name) {
    const violations = await page.evaluate(async (source) => {
      if (!window.axe) (0, eval)(source);
      const result = await window.axe.run(document, { resultTypes: ['violations'] });
      return result.violations.map((v) => ({
        id: v.id,
        impact: v.impact,
        help: v.help,
        targets: v.nodes.slice(0, 3).map((n) => `${n.target.join(' ')} ${n.html.slice(0, 160)}`),
      }));
    }, AXE_SOURCE);
    axeChecked += 1;
    for (const v of violations.filter((x) => AXE_BLOCKING.has(x.impact))) {
      problems.push(`[${current.name}] axe ${v.impact} on ${name}: ${v.id} (${v.help}) at ${v.targets.join(', ')}`);
    }
  }

  /** Wait for the page's finite animations and transitions (modals, notifications) to end. */
  async function settle(page) {
    await page.waitForTimeout(50);
    await page.evaluate(async () => {
      const finite = document.getAnimations().filter((a) => a.effect?.getTiming().iterations !== Infinity);
      const ended = Promise.all(finite.map((a) => a.finished.catch(() => undefined)));
      await Promise.race([ended, new Promise((resolve) => setTimeout(resolve, 3000))]);
    });
  }

  async function screenshot(page, name) {
    shot += 1;
    await page.waitForLoadState('networkidle', { timeout: 5000 }).catch(() => {});
    // Let transitions (modals, notifications) settle so the picture shows the steady state:
    // a notification caught mid-fade has the contrast of a half-transparent one.
    await page.waitForTimeout(300);
    await settle(page);
    await checkAccessibility(page, name);
    // Full-page shots stitch the page from the top; start there so the fixed header sits on top.
    await page.evaluate(() => window.scrollTo(0, 0));
    const path = join(artifacts, `${String(shot).padStart(2, '0')}-${name}.png`);
    await page.screenshot({ path, fullPage: true });
    return path;
  }

  async function expectNoArtifactUrls(page) {
    const sources = await page.$$eval('img', (imgs) => imgs.map((img) => img.getAttribute('src') ?? ''));
    const leaked = sources.filter((src) => src.includes('/artifacts/') || src.includes('/plots/'));
    assert(leaked.length === 0, `images must be shown through blob: URLs, found ${leaked.join(', ')}`);
  }

  async function logIn(page, password = PASSWORD) {
    await page.getByRole('textbox', { name: 'Email' }).fill(EMAIL);
    await page.getByRole('textbox', { name: 'Password', exact: true }).fill(password);
    await page.getByRole('button', { name: 'Log in' }).click();
  }

  /** The API's answer for a path, with the page's own session. */
  async function apiGet(page, path) {
    const token = await page.evaluate(() => window.sessionStorage.getItem('spondyscan.token'));
    const res = await page.request.get(`${base}${path}`, { headers: { Authorization: `Bearer ${token}` } });
    assert(res.ok(), `GET ${path} answered ${res.status()}`);
    return res.json();
  }

  async function sliceLabel(page) {
    return (await page.getByTestId('slice-label').innerText()).trim();
  }

  async function expectSlice(page, k, n) {
    await page
      .waitForFunction(
        (text) => document.querySelector('[data-testid=slice-label]')?.textContent?.trim() === text,
        `Slice ${k} of ${n}`,
        { timeout: 5000 },
      )
      .catch(async () => {
        throw new StepError(`expected "Slice ${k} of ${n}", the viewer shows "${await sliceLabel(page)}"`);
      });
  }

  /** Click a download button; the file must come back 200 and be saved under a sensible name. */
  async function download(page, button, urlPart, extension) {
    const [response, file] = await Promise.all([
      page.waitForResponse((r) => r.url().includes(urlPart) && r.request().method() === 'GET'),
      page.waitForEvent('download'),
      button.click(),
    ]);
    assert(response.status() === 200, `${urlPart} answered ${response.status()}`);
    assert(file.suggestedFilename().endsWith(extension), `download named ${file.suggestedFilename()}`);
  }

  const steps = [
    {
      name: 'client routes load directly',
      allow: [401],
      async run(page) {
        // The root redirects to the app, which sends a visitor without a session to log in.
        await page.goto(`${base}/`);
        await page.getByRole('heading', { name: 'Log in', exact: true }).waitFor();
        assert(page.url() === `${app}/login`, `expected ${app}/login, got ${page.url()}`);
        // An API path answers JSON even when asked for HTML, as a browser navigation asks.
        const api = await page.request.get(`${base}/history`, {
          headers: { Accept: 'text/html,application/xhtml+xml' },
        });
        assert(api.status() === 401, `expected 401 from the API, got ${api.status()}`);
        assert(api.headers()['content-type'].startsWith('application/json'), 'API paths stay JSON');
        await page.goto(`${app}/analyze`);
        // No session yet: the guard sends the browser to log in.
        await page.getByRole('heading', { name: 'Log in', exact: true }).waitFor();
        assert(page.url().endsWith('/login'), `expected /login, got ${page.url()}`);
        await page.goto(`${app}/history/00000000-0000-0000-0000-000000000000`);
        await page.getByRole('heading', { name: 'Log in', exact: true }).waitFor();
        // The guard remembers the page asked for; make that the Analyze page again.
        await page.goto(`${app}/analyze`);
        await page.getByRole('heading', { name: 'Log in', exact: true }).waitFor();
        await screenshot(page, 'login');
      },
    },
    {
      name: 'sign up shows form errors, then creates the account',
      async run(page) {
        await page.getByRole('link', { name: 'Sign up' }).click();
        await page.getByRole('heading', { name: 'Create an account' }).waitFor();
        await page.getByRole('textbox', { name: 'Email' }).fill('not-an-email');
        await page.getByRole('textbox', { name: 'Password', exact: true }).fill('short');
        await page.getByRole('textbox', { name: 'Confirm password' }).fill('different');
        await page.getByRole('button', { name: 'Sign up' }).click();
        await page.getByText('Enter a valid email address').waitFor();
        await page.getByText('Use at least 8 characters.').waitFor();
        await page.getByText('The passwords do not match.').waitFor();
        await screenshot(page, 'signup-errors');
        await page.getByRole('textbox', { name: 'Email' }).fill(EMAIL);
        await page.getByRole('textbox', { name: 'Password', exact: true }).fill(PASSWORD);
        await page.getByRole('textbox', { name: 'Confirm password' }).fill(PASSWORD);
        await page.getByRole('button', { name: 'Sign up' }).click();
        await page.getByRole('heading', { name: 'Analyze a slice' }).waitFor({ timeout: TIMEOUT });
        const token = await page.evaluate(() => window.sessionStorage.getItem('spondyscan.token'));
        assert(token && token.length > 20, 'the token is kept in sessionStorage after sign-up');
      },
    },
    {
      name: 'a taken email is refused clearly',
      allow: [409],
      async run(page, context) {
        const other = await context.newPage();
        watch(other);
        await other.goto(`${app}/signup`);
        // A new tab has its own sessionStorage, so it starts logged out.
        await other.getByRole('heading', { name: 'Create an account' }).waitFor();
        await other.getByRole('textbox', { name: 'Email' }).fill(EMAIL);
        await other.getByRole('textbox', { name: 'Password', exact: true }).fill(PASSWORD);
        await other.getByRole('textbox', { name: 'Confirm password' }).fill(PASSWORD);
        await other.getByRole('button', { name: 'Sign up' }).click();
        await other.getByRole('alert').filter({ hasText: 'already exists' }).first().waitFor();
        await other.close();
      },
    },
    {
      name: 'log out',
      async run(page) {
        const before = await page.evaluate(() => window.sessionStorage.getItem('spondyscan.token'));
        await page.getByRole('button', { name: 'Account menu' }).click();
        await page.getByRole('menuitem', { name: 'Log out' }).click();
        await page.getByRole('heading', { name: 'Log in', exact: true }).waitFor();
        const token = await page.evaluate(() => window.sessionStorage.getItem('spondyscan.token'));
        assert(token === null, 'log-out removes the token');
        // The server revoked it too: a copy of the old token no longer works.
        const reuse = await page.request.get(`${base}/auth/me`, { headers: { Authorization: `Bearer ${before}` } });
        assert(reuse.status() === 401, `a logged-out token must be refused, got ${reuse.status()}`);
      },
    },
    {
      name: 'a wrong password shows a clear error',
      allow: [401],
      async run(page) {
        await logIn(page, 'not the right password');
        const alert = page.getByRole('alert').filter({ hasText: 'Log-in failed' });
        await alert.waitFor();
        const text = await alert.innerText();
        assert(/incorrect email or password/i.test(text), `unexpected login error text: ${text}`);
        await screenshot(page, 'login-wrong-password');
      },
    },
    {
      name: 'log in',
      async run(page) {
        await logIn(page);
        await page.getByRole('heading', { name: 'Analyze a slice' }).waitFor({ timeout: TIMEOUT });
        // Defaults are preselected before anything is uploaded.
        await page.getByRole('checkbox', { name: /cnn_tiny \(random/ }).waitFor();
        const checked = await page.getByRole('checkbox', { name: /^cnn_tiny \(random/ }).getAttribute('aria-checked');
        assert(checked === 'true', 'the default classifier is preselected');
        await screenshot(page, 'analyze-empty');
      },
    },
    {
      name: 'a non-image upload is refused clearly',
      async run(page) {
        await page.locator('input[type=file]').setInputFiles(files.notes);
        const alert = page.getByTestId('file-error');
        await alert.waitFor();
        const text = await alert.innerText();
        assert(/not an image spondyscan can read/.test(text), `unexpected file error: ${text}`);
        assert(await page.getByTestId('run-analysis').isDisabled(), 'Run stays disabled without an image');
        await screenshot(page, 'analyze-non-image');
      },
    },
    {
      name: 'a corrupt image gets the server error',
      allow: [400, 415],
      async run(page) {
        await page.locator('input[type=file]').setInputFiles(files.corrupt);
        await page.getByTestId('file-preview').waitFor();
        await page.getByTestId('run-analysis').click();
        const alert = page.getByTestId('error-alert');
        await alert.waitFor({ timeout: ANALYSIS_TIMEOUT });
        const text = await alert.innerText();
        assert(/could not be read|corrupt|unsupported|not a valid/i.test(text), `unexpected server error: ${text}`);
        await screenshot(page, 'analyze-corrupt-image');
        await page.getByRole('button', { name: 'Remove this file' }).click();
      },
    },
    {
      name: 'upload a slice and compare two models',
      async run(page) {
        await page.locator('input[type=file]').setInputFiles(files.sample);
        const preview = page.getByTestId('file-preview');
        await preview.waitFor();
        if (/\.(png|jpe?g)$/i.test(files.sample)) {
          await preview.locator('img').waitFor();
          const src = await preview.locator('img').getAttribute('src');
          assert(src?.startsWith('blob:'), 'PNG/JPEG files are previewed');
        }
        await page.getByRole('checkbox', { name: /^cnn_tiny_b/ }).click();
        assert(
          (await page.getByRole('checkbox', { name: /^cnn_tiny_b/ }).getAttribute('aria-checked')) === 'true',
          'a second model can be chosen',
        );
        await screenshot(page, 'analyze-ready');
        await page.getByTestId('run-analysis').click();
        await page.waitForURL(/\/history\/[0-9a-f-]{36}$/, { timeout: ANALYSIS_TIMEOUT });
        resultId = page.url().split('/').pop();
        await page.getByTestId('layer-stage').waitFor();
      },
    },
    {
      name: 'the result shows heatmap and mask layers, side by side models, provenance',
      async run(page) {
        await page.getByRole('heading', { name: /^Result: / }).waitFor();
        await page.locator('[data-testid=layer-stage] img').first().waitFor();
        // Default layers: contour, Grad-CAM heatmap, ROI box; each canvas is drawn once its image loads.
        await page.locator('[data-testid=layer-gradcam] canvas[data-ready]').waitFor({ timeout: TIMEOUT });
        await page.locator('[data-testid=layer-contour] canvas[data-ready]').waitFor({ timeout: TIMEOUT });
        await page.getByRole('switch', { name: /Segmentation mask/ }).check();
        await page.locator('[data-testid=layer-mask] canvas[data-ready]').waitFor({ timeout: TIMEOUT });
        const heatPixels = await page.$eval('[data-testid=layer-gradcam] canvas', (canvas) => {
          const ctx = canvas.getContext('2d');
          const data = ctx.getImageData(0, 0, canvas.width, canvas.height).data;
          let visible = 0;
          for (let i = 3; i < data.length; i += 4) if (data[i] > 0) visible += 1;
          return { visible, total: data.length / 4 };
        });
        assert(heatPixels.visible > 0, 'the heatmap layer has visible pixels');
        const rows = await page.getByTestId('comparison-table').locator('tbody tr').count();
        assert(rows === 2, `two models side by side, got ${rows}`);
        assert((await page.getByTestId('model-result-cnn_tiny').count()) === 1, 'first model card');
        assert((await page.getByTestId('model-result-cnn_tiny_b').count()) === 1, 'second model card');
        const notice = await page.getByTestId('research-notice').first().innerText();
        assert(/Research use only/i.test(notice) && /not a diagnosis/i.test(notice), 'research notice visible');
        assert(/feature_rule_v2/.test(notice), 'label provenance visible');
        const faith = await page.getByTestId('faithfulness').first().innerText();
        assert(/score/.test(faith), `faithfulness explained: ${faith}`);
        const versions = await page.getByTestId('versions-table').innerText();
        assert(/v0\.0\.1/i.test(versions), 'model versions shown');
        resultStatus = (await page.getByTestId('as-status').first().innerText()).replace(/^AS\s+/i, '').trim().toLowerCase();
        await expectNoArtifactUrls(page);
        await screenshot(page, 'result');
        // Opacity slider and the other model's heatmap.
        const thumb = page.getByRole('slider', { name: 'Layer opacity' });
        await thumb.focus();
        await page.keyboard.press('End');
        // The layer fades (a short CSS transition): wait for the end value.
        await page
          .waitForFunction(
            () => getComputedStyle(document.querySelector('[data-testid=layer-gradcam]')).opacity === '1',
            null,
            { timeout: 5000 },
          )
          .catch(() => {
            throw new StepError('the opacity slider does not reach the layers');
          });
        await page.getByTestId('heatmap-select').click();
        await page.getByRole('option', { name: /cnn_tiny_b/ }).click();
        await page.locator('[data-testid=layer-gradcam] canvas[data-ready]').waitFor({ timeout: TIMEOUT });
        await page.getByRole('switch', { name: /Focused heatmap/ }).check();
        await page.locator('[data-testid=layer-focused] img').waitFor();
        await screenshot(page, 'result-second-model-focused');
      },
    },
    {
      name: 'downloads: JSON and an overlay',
      async run(page) {
        await page.getByRole('button', { name: 'Download' }).click();
        const [json] = await Promise.all([
          page.waitForEvent('download'),
          page.getByRole('menuitem', { name: 'Result (JSON)' }).click(),
        ]);
        assert(json.suggestedFilename().endsWith('.json'), 'JSON download');
        await page.getByRole('button', { name: 'Download' }).click();
        const [overlay] = await Promise.all([
          page.waitForEvent('download'),
          page.getByRole('menuitem', { name: /Grad-CAM overlay — cnn_tiny \(random/ }).click(),
        ]);
        assert(overlay.suggestedFilename().endsWith('.png'), 'overlay PNG download');
      },
    },
    {
      name: 'the result page loads directly (deep link) and at tablet width',
      async run(page) {
        await page.goto(`${app}/history/${resultId}`);
        await page.getByRole('heading', { name: /^Result: / }).waitFor();
        await page.locator('[data-testid=layer-gradcam] canvas[data-ready]').waitFor({ timeout: TIMEOUT });
        await page.setViewportSize({ width: 768, height: 1024 });
        await screenshot(page, 'result-tablet');
        await page.setViewportSize({ width: 1366, height: 900 });
      },
    },
    {
      name: 'find the result in history, with filters',
      async run(page) {
        await page.getByRole('link', { name: 'History' }).first().click();
        await page.getByRole('heading', { name: 'History', exact: true }).waitFor();
        const row = page.getByTestId('history-row');
        await row.first().waitFor();
        assert((await row.count()) === 1, 'one row in history');
        await row.first().locator('img').waitFor({ timeout: TIMEOUT });
        await expectNoArtifactUrls(page);
        await screenshot(page, 'history');
        // Filtering by the other status empties the table; by the right one keeps the row.
        const other = resultStatus === 'positive' ? 'Negative' : 'Positive';
        await page.getByTestId('filter-status').click();
        await page.getByRole('option', { name: other }).click();
        await page.getByText('No results match these filters').waitFor();
        await screenshot(page, 'history-filtered-empty');
        await page.getByRole('button', { name: 'Clear filters' }).first().click();
        await row.first().waitFor();
        await page.getByTestId('filter-model').click();
        await page.getByRole('option', { name: /cnn_tiny_b/ }).click();
        await row.first().waitFor();
        await page.getByRole('button', { name: 'Clear filters' }).first().click();
        // Date range (kept in the address): today has the result, a day last year has none.
        const day = (d) =>
          `${d.getFullYear()}-${String(d.getMonth() + 1).padStart(2, '0')}-${String(d.getDate()).padStart(2, '0')}`;
        const today = day(new Date());
        await page.goto(`${app}/history?from=${today}&to=${today}`);
        await row.first().waitFor();
        const lastYear = new Date();
        lastYear.setFullYear(lastYear.getFullYear() - 1);
        await page.goto(`${app}/history?from=${day(lastYear)}&to=${day(lastYear)}`);
        await page.getByText('No results match these filters').waitFor();
        await page.getByRole('button', { name: 'Clear filters' }).first().click();
        await row.first().getByRole('link', { name: 'Open', exact: true }).click();
        await page.waitForURL(new RegExp(`/history/${resultId}$`));
        await page.getByRole('heading', { name: /^Result: / }).waitFor();
      },
    },
    {
      name: 'models registry and a model card with its plots',
      async run(page) {
        await page.getByRole('link', { name: 'Models' }).first().click();
        await page.getByRole('heading', { name: 'Model registry' }).waitFor();
        await page.getByTestId('registry-seg_tiny').waitFor();
        assert((await page.getByTestId('registry-cnn_tiny_b').count()) === 1, 'all bundles listed');
        const cvLine = await page.getByTestId('cv-headline-seg_tiny').innerText();
        assert(cvLine.includes('Cross-validated dice (2 folds): 75.0% (70.0%–79.0%)'), `registry CV line: ${cvLine}`);
        await screenshot(page, 'models');
        await page.getByTestId('registry-cnn_tiny').getByRole('link').click();
        await page.getByRole('heading', { name: /cnn_tiny \(random/ }).waitFor();
        await page.getByRole('img', { name: /Confusion binary/i }).waitFor({ timeout: TIMEOUT });
        await expectNoArtifactUrls(page);
        await screenshot(page, 'model-card');
        // A segmenter's card with its cross-validation beside the single split.
        await page.getByRole('link', { name: 'All models' }).click();
        await page.getByTestId('registry-seg_tiny').getByRole('link').click();
        const cv = page.getByRole('region', { name: 'Cross-validation' });
        await cv.waitFor();
        const iou = await cv.getByRole('row', { name: /^IoU/ }).innerText();
        assert(iou.includes('0.610 (0.550–0.660)') && iou.includes('0.580 · 0.640'), `IoU row: ${iou}`);
        const source = await cv.getByRole('row', { name: /^phantom/ }).innerText();
        assert(source.includes('6') && source.includes('54') && source.includes('0.610'), `source row: ${source}`);
        await screenshot(page, 'model-card-cross-validation');
      },
    },
    {
      name: 'API keys: create (shown once), list, revoke',
      async run(page) {
        await page.getByRole('link', { name: 'API keys' }).first().click();
        await page.getByRole('heading', { name: 'API keys', exact: true }).waitFor();
        await page.getByText('No API keys yet').waitFor();
        await page.getByLabel('Key name').fill('PACS bridge');
        await page.getByRole('button', { name: 'Create key' }).click();
        const key = await page.getByTestId('new-api-key').innerText();
        assert(key.startsWith('ssk_'), `key shown once: ${key.slice(0, 6)}…`);
        await screenshot(page, 'api-key-created');
        await page.getByRole('button', { name: 'I have stored the key' }).click();
        const table = page.getByTestId('api-keys-table');
        await table.waitFor();
        const listed = await table.innerText();
        assert(listed.includes('PACS bridge') && !listed.includes(key), 'listed without the secret');
        // The key works against the API, then stops working once revoked.
        const ok = await fetch(`${base}/auth/me`, { headers: { 'X-API-Key': key } });
        assert(ok.status === 200, `new key accepted, got ${ok.status}`);
        await table.getByRole('button', { name: 'Revoke' }).click();
        await page.getByTestId('confirm-delete').click();
        await table.getByText(/revoked/).waitFor();
        const refused = await fetch(`${base}/auth/me`, { headers: { 'X-API-Key': key } });
        assert(refused.status === 401, `revoked key refused, got ${refused.status}`);
        await screenshot(page, 'api-keys');
      },
    },
    {
      name: 'unknown pages say so',
      async run(page) {
        await page.goto(`${app}/no/such/page`);
        await page.getByRole('heading', { name: 'Page not found' }).waitFor();
      },
    },
    {
      name: 'delete the result with confirmation',
      async run(page) {
        await page.goto(`${app}/history`);
        const row = page.getByTestId('history-row');
        await row.first().waitFor();
        await row.first().getByTestId('delete-row').click();
        await page.getByRole('dialog', { name: 'Delete this result?' }).waitFor();
        await screenshot(page, 'history-delete-confirm');
        // Cancel first: nothing happens.
        await page.getByRole('button', { name: 'Cancel' }).click();
        assert((await row.count()) === 1, 'cancel keeps the row');
        await row.first().getByTestId('delete-row').click();
        await page.getByTestId('confirm-delete').click();
        await page.getByText('No analyses yet').waitFor();
        await screenshot(page, 'history-empty');
      },
    },
    {
      name: 'a deleted result is gone',
      allow: [404],
      async run(page) {
        await page.goto(`${app}/history/${resultId}`);
        await page.getByRole('heading', { name: 'Result not found' }).waitFor();
      },
    },
    {
      name: 'an image unlike the training slices is flagged and its outputs withheld',
      async run(page) {
        if (!files.domainReference) {
          // No reference distribution beside the bundles (no real sample slice to check it
          // with): the server checks headers only, and the banner is covered by unit tests.
          log('     (no domain reference installed: out-of-domain banner not exercised here)');
          return;
        }
        await page.getByRole('link', { name: 'Analyze' }).first().click();
        await page.getByRole('heading', { name: 'Analyze a slice' }).waitFor();
        await page.locator('input[type=file]').setInputFiles(files.noise);
        await page.getByTestId('file-preview').waitFor();
        await page.getByTestId('run-analysis').click();
        await page.waitForURL(/\/history\/[0-9a-f-]{36}$/, { timeout: ANALYSIS_TIMEOUT });
        const banner = page.getByTestId('domain-banner');
        await banner.waitFor();
        const text = await banner.innerText();
        assert(/unlike the slices the models were trained on/.test(text), `banner: ${text}`);
        assert(/Domain score \d/.test(text), `the banner gives the score: ${text}`);
        await page.getByTestId('withheld-notice').waitFor();
        assert((await page.getByTestId('as-status').count()) === 0, 'no AS status is shown when withheld');
        assert((await page.getByTestId('research-notice').count()) > 0, 'research notice visible');
        await screenshot(page, 'result-out-of-domain');
      },
    },
    {
      name: 'an explanation method and a segmenter can be chosen: occlusion sensitivity, seg_tiny_b',
      async run(page) {
        await page.getByRole('link', { name: 'Analyze' }).first().click();
        await page.getByRole('heading', { name: 'Analyze a slice' }).waitFor();
        await page.locator('input[type=file]').setInputFiles(files.sample);
        await page.getByTestId('file-preview').waitFor();
        await page.getByRole('textbox', { name: 'Explanation method' }).click();
        await page.getByRole('option', { name: 'Occlusion sensitivity' }).click();
        const segmenter = page.getByRole('textbox', { name: 'Segmentation model' });
        const preselected = await segmenter.inputValue();
        assert(/^seg_tiny \(.*\(default\)/.test(preselected), `the default segmenter is preselected: ${preselected}`);
        await segmenter.click();
        await page.getByRole('option', { name: /^seg_tiny_b/ }).click();
        await page.getByTestId('run-analysis').click();
        await page.waitForURL(/\/history\/[0-9a-f-]{36}$/, { timeout: ANALYSIS_TIMEOUT });
        await page.getByTestId('faithfulness').first().waitFor();
        const body = await page.locator('main').first().innerText();
        assert(/occlusion/.test(body), 'the result names the method it shows');
        assert(/Segmentation — seg_tiny_b /.test(body), 'the result names the segmenter chosen');
      },
    },
    {
      name: 'a DICOM series becomes a study: progress, viewer, chart, result, mask download',
      async run(page) {
        await page.getByRole('link', { name: 'Studies' }).first().click();
        await page.getByRole('heading', { name: 'Studies', exact: true }).waitFor();
        await page.getByText('No studies yet').waitFor();
        await page.getByTestId('study-files').setInputFiles(files.seriesFiles);
        const chosen = await page.getByTestId('chosen-files').innerText();
        assert(chosen.includes(`${files.seriesFiles.length} files`), `chosen files: ${chosen}`);
        // Synthetic phantoms are unlike real slices: ask for the outputs anyway.
        await page.getByRole('checkbox', { name: /Show model outputs even for images unlike/ }).check();
        await screenshot(page, 'studies-ready');
        // The tiny models finish in a moment: hold the page's first status requests back (a
        // slow network) so the progress view can be checked before the result arrives.
        let release;
        const held = new Promise((r) => {
          release = r;
        });
        const studyUrl = /\/studies\/[0-9a-f-]{36}$/;
        await page.route(studyUrl, async (route) => {
          if (route.request().resourceType() === 'fetch' && route.request().method() === 'GET') await held;
          // Removing the route lets held requests through on their own; never fail on that.
          await route.continue().catch(() => {});
        });
        try {
          await page.getByTestId('run-study').click();
          await page.waitForURL(/\/studies\/[0-9a-f-]{36}$/, { timeout: TIMEOUT });
          studyId = page.url().split('/').pop();
          const running = page.getByTestId('study-running');
          await running.waitFor();
          const progress = await running.innerText();
          assert(/slices|Queued|Waiting/.test(progress), `progress text: ${progress}`);
          assert(await page.getByTestId('cancel-study').isVisible(), 'a running study can be cancelled');
          assert((await running.getByRole('progressbar').count()) === 1, 'a progress bar');
          await screenshot(page, 'study-progress');
        } finally {
          release();
          await page.unroute(studyUrl, undefined).catch(() => {});
        }
        await page.locator('[data-testid=run-status][data-status=done], [data-testid=run-status][data-status=failed]').first().waitFor({ timeout: ANALYSIS_TIMEOUT });
        const failed = page.getByTestId('study-failed');
        if (await failed.isVisible()) throw new StepError(`the study failed: ${await failed.innerText()}`);
        const study = await apiGet(page, `/studies/${studyId}`);
        const n = study.result.slices.length;
        assert(n === files.seriesFiles.length, `${files.seriesFiles.length} slices expected, got ${n}`);
        await page.getByTestId('slice-viewer').locator('img').first().waitFor();
        // Keyboard: the viewer region takes focus; arrows, Home and End move through the series.
        await page.getByTestId('slice-viewer').focus();
        await page.keyboard.press('Home');
        await expectSlice(page, 1, n);
        await page.keyboard.press('ArrowRight');
        await expectSlice(page, 2, n);
        await page.keyboard.press('End');
        await expectSlice(page, n, n);
        await page.keyboard.press('ArrowUp');
        await expectSlice(page, n - 1, n);
        // The slider moves it too.
        const slider = page.getByRole('slider', { name: 'Slice' });
        await slider.focus();
        await page.keyboard.press('ArrowLeft');
        await expectSlice(page, n - 2, n);
        // So does the mouse wheel over the image.
        await page.getByTestId('slice-viewer').hover();
        await page.mouse.wheel(0, -120);
        await expectSlice(page, n - 4, n);
        // The mask layer switches on and off on a slice that has one.
        const masked = study.result.slices.findIndex((s) => s.mask_url);
        const maskSwitch = page.getByRole('switch', { name: /Segmentation mask/ });
        if (masked >= 0) {
          await page.getByTestId('slice-viewer').focus();
          await page.keyboard.press('Home');
          for (let i = 0; i < masked; i += 1) await page.keyboard.press('ArrowRight');
          await expectSlice(page, masked + 1, n);
          await page.getByTestId('slice-mask-layer').waitFor();
          await maskSwitch.uncheck();
          await page.getByTestId('slice-mask-layer').waitFor({ state: 'detached' });
          await maskSwitch.check();
          await page.getByTestId('slice-mask-layer').waitFor();
        } else {
          assert(await maskSwitch.isDisabled(), 'without a mask the mask switch is disabled');
          log('     (the random segmenter found nothing: mask switch disabled, as it should be)');
        }
        // Heatmaps exist on key slices only; without any the switch is disabled, not broken.
        const heatSlices = study.result.slices.filter((s) => (s.heatmaps ?? []).length > 0).length;
        if (heatSlices === 0) {
          assert(await page.getByRole('switch', { name: /Heatmap/ }).isDisabled(), 'no heatmaps: the switch is disabled');
        }
        // The chart (or the reason there is none) and the study-level result.
        await page.getByRole('heading', { name: 'P(AS positive) along the series' }).waitFor();
        const classified = study.result.slices.some((s) => (s.classifications ?? []).length > 0);
        if (classified) {
          const chart = page.getByTestId('series-chart');
          await chart.locator('svg title').first().waitFor({ state: 'attached' });
          await page.getByTestId('slice-viewer').focus();
          await page.keyboard.press('End');
          await expectSlice(page, n, n);
          await chart.locator('circle[data-index="0"]').first().click();
          await expectSlice(page, 1, n);
          await chart.getByText('Chart data as a table').click();
          const rows = await page.getByTestId('series-chart-table').locator('tbody tr').count();
          assert(rows === n, `the chart's table has a row per slice (${rows})`);
        } else {
          await page.getByTestId('series-chart-empty').waitFor();
        }
        await page.getByRole('heading', { name: 'Study-level result' }).waitFor();
        if (study.result.models.length > 0) {
          await page.getByTestId(`study-model-${study.result.models[0].model.key}`).waitFor();
          const provenance = await page.getByTestId('study-provenance').first().innerText();
          assert(/not radiologists/.test(provenance), `label provenance: ${provenance}`);
        } else {
          await page.getByTestId('study-no-models').waitFor();
        }
        await page.getByTestId('study-input').waitFor();
        assert((await page.getByTestId('research-notice').count()) > 0, 'research notice visible');
        await download(page, page.getByTestId('download-mask'), '/mask.nii.gz', '.nii.gz');
        await download(page, page.getByTestId('download-study-json'), `/studies/${studyId}`, '.json');
        await download(page, page.getByTestId('download-fhir'), `/studies/${studyId}/fhir`, '.json');
        if ((study.result.segmentation?.voxels ?? 0) > 0) {
          // DICOM SEG + SR (+ parametric maps) of the series, as one zip.
          await download(page, page.getByTestId('download-dicom'), `/studies/${studyId}/dicom`, '.zip');
        }
        await expectNoArtifactUrls(page);
        await screenshot(page, 'study-done');
      },
    },
    {
      name: 'the study is listed with its status and opens from history',
      async run(page) {
        await page.getByRole('link', { name: 'Studies', exact: true }).first().click();
        const row = page.getByTestId('study-row');
        await row.first().waitFor();
        assert((await row.count()) === 1, 'one study listed');
        // The list may first show what it held while the study ran; it refreshes on its own.
        await row.first().locator('[data-testid=run-status][data-status=done]').waitFor();
        const text = await row.first().innerText();
        assert(/done/i.test(text) && /12/.test(text), `study row: ${text}`);
        await screenshot(page, 'studies');
        await page.getByRole('link', { name: 'History' }).first().click();
        const studyRow = page.getByTestId('history-row').filter({ hasText: 'Study' });
        await studyRow.first().waitFor();
        await studyRow.first().getByRole('link', { name: 'Open', exact: true }).click();
        await page.waitForURL(new RegExp(`/studies/${studyId}$`));
        await page.getByTestId('slice-viewer').waitFor();
      },
    },
    {
      name: 'a batch job runs to 100 % and its results download',
      async run(page) {
        await page.getByRole('link', { name: 'Jobs' }).first().click();
        await page.getByRole('heading', { name: 'Jobs', exact: true }).waitFor();
        const data = readFileSync(files.sample);
        const type = /\.png$/i.test(files.sample) ? 'image/png' : 'image/jpeg';
        const ext = basename(files.sample).split('.').pop();
        await page.getByTestId('job-files').setInputFiles([
          { name: `first.${ext}`, mimeType: type, buffer: data },
          { name: `second.${ext}`, mimeType: type, buffer: data },
        ]);
        await page.getByTestId('chosen-files').waitFor();
        await page.getByTestId('run-job').click();
        // The confirmation is checked once it is fully shown, then allowed to close on its own
        // before the next checks, so none of them catches it fading out.
        const submitted = page.getByText('Batch submitted');
        await submitted.waitFor();
        await settle(page);
        await checkAccessibility(page, 'job-submitted');
        await submitted.waitFor({ state: 'hidden', timeout: TIMEOUT });
        const row = page.getByTestId('job-row');
        await row.first().waitFor();
        assert((await row.count()) === 1, 'batch jobs only by default');
        await row.first().locator('[data-testid=job-progress][data-percent="100"]').waitFor({ timeout: ANALYSIS_TIMEOUT });
        const progress = await row.first().getByRole('progressbar').getAttribute('aria-valuenow');
        assert(progress === '100', `progress bar at ${progress}`);
        await screenshot(page, 'jobs');
        // Study jobs join the list on request.
        await page.getByRole('switch', { name: 'Include study jobs' }).check();
        await page.waitForFunction(() => document.querySelectorAll('[data-testid=job-row]').length === 2, null, { timeout: TIMEOUT });
        await page.getByRole('switch', { name: 'Include study jobs' }).uncheck();
        await page.waitForFunction(() => document.querySelectorAll('[data-testid=job-row]').length === 1, null, { timeout: TIMEOUT });
        await row.first().getByRole('link', { name: /^Details/ }).click();
        await page.getByRole('heading', { name: 'Batch job' }).waitFor();
        const items = page.getByTestId('job-items').locator('[data-testid=job-item][data-status=done]');
        await page.waitForFunction(() => document.querySelectorAll('[data-testid=job-item][data-status=done]').length === 2, null, { timeout: TIMEOUT });
        assert((await items.count()) === 2, 'both items done');
        assert((await page.getByRole('link', { name: /^Open result: / }).count()) === 2, 'each item links to its result');
        await download(page, page.getByTestId('download-csv'), '/results.csv', '.csv');
        await download(page, page.getByTestId('download-json'), '/results.json', '.json');
        await screenshot(page, 'job-detail');
        await page.getByRole('link', { name: /^Open result: first/ }).click();
        await page.getByRole('heading', { name: /^Result: first/ }).waitFor();
      },
    },
    {
      name: 'change the password from the account menu',
      allow: [401, 403],
      async run(page) {
        await page.getByRole('button', { name: 'Account menu' }).click();
        await page.getByRole('menuitem', { name: 'Change password' }).click();
        await page.getByRole('heading', { name: 'Change password' }).waitFor();
        const form = page.getByRole('form', { name: 'Change password' });
        const field = (name) => form.getByRole('textbox', { name, exact: true });
        await field('Current password').fill('not my password');
        await field('New password').fill(NEW_PASSWORD);
        await field('Confirm new password').fill(NEW_PASSWORD);
        await form.getByRole('button', { name: 'Change password' }).click();
        await page.getByText('The current password is not correct.').waitFor();
        await screenshot(page, 'account-wrong-password');
        await field('Current password').fill(PASSWORD);
        await form.getByRole('button', { name: 'Change password' }).click();
        await page.getByText('Password changed').waitFor();
        await screenshot(page, 'account-password-changed');
        // Still logged in with the new token, and the new password is the one that works.
        await page.getByRole('link', { name: 'History' }).first().click();
        await page.getByRole('heading', { name: 'History', exact: true }).waitFor();
        const old = await page.request.post(`${base}/auth/token`, { form: { username: EMAIL, password: PASSWORD } });
        assert(old.status() === 401, 'the old password no longer logs in');
        const fresh = await page.request.post(`${base}/auth/token`, { form: { username: EMAIL, password: NEW_PASSWORD } });
        assert(fresh.ok(), 'the new password logs in');
      },
    },
    {
      name: 'an expired or invalid token sends the user back to log in',
      allow: [401],
      async run(page) {
        await page.evaluate(() => window.sessionStorage.setItem('spondyscan.token', 'not.a.valid.token'));
        await page.goto(`${app}/history`);
        await page.getByRole('heading', { name: 'Log in', exact: true }).waitFor({ timeout: TIMEOUT });
        await page.getByText('Your session has ended').waitFor();
        await screenshot(page, 'login-session-ended');
      },
    },
  ];

  async function run(browser) {
    const context = await browser.newContext({ viewport: { width: 1366, height: 900 }, acceptDownloads: true });
    const page = await context.newPage();
    page.setDefaultTimeout(TIMEOUT);
    watch(page);
    let passed = 0;
    let ok = true;
    for (const step of steps) {
      current = { name: step.name, allow: step.allow ?? [] };
      const before = problems.length;
      const started = Date.now();
      try {
        await step.run(page, context);
        // Late console errors from this step (e.g. a failed image) still belong to it.
        await page.waitForTimeout(150);
        if (problems.length > before) throw new StepError(problems.slice(before).join('\n'));
        passed += 1;
        log(`ok   ${step.name} (${((Date.now() - started) / 1000).toFixed(1)} s)`);
      } catch (error) {
        ok = false;
        const seen = problems.slice(before);
        log(`FAIL ${step.name}\n${error instanceof Error ? error.message : String(error)}`);
        if (seen.length > 0 && !(error instanceof StepError)) log(`also seen:\n${seen.join('\n')}`);
        await page.screenshot({ path: join(artifacts, `FAILED-${step.name.replace(/\W+/g, '-')}.png`), fullPage: true }).catch(() => {});
        break;
      }
    }
    await context.close();
    log(`${passed}/${steps.length} steps passed; axe-core checked ${axeChecked} page states`);
    // A suite that photographed pages but never ran axe would prove nothing about them.
    return ok && axeChecked > 0;
  }

  return { run };
}
