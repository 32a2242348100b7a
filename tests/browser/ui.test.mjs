// The web UI in a real browser (headless Debian Chromium driven by playwright-core) against the
// real xinference-local with auth on, serving the real test models. Started by
// scripts/browser-test.sh, which provides:
//
//   XI_URL         server with --auth-config (users below)
//   XI_OPEN_URL    server without auth
//   XI_SECRET      the auth config's secret_key (to sign an expired token)
//   XI_MODELS      folder of the test models (scripts/fetch-test-models.sh)
//   CHROMIUM       the browser (default /usr/bin/chromium)
//   BROWSER_TEST_OUT  where the screenshots go
//
// The steps run in order and share the server: the admin launches the models that later steps
// (the list-only user, the chat) see.

import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { createHmac } from 'node:crypto';
import { mkdirSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { chromium } from 'playwright-core';
import { buildCrossEncoder } from './cross-encoder.mjs';

const env = (name) => {
  const value = process.env[name];
  if (!value) throw new Error(`${name} is not set; run scripts/browser-test.sh`);
  return value;
};
const URL_AUTH = env('XI_URL');
const URL_OPEN = env('XI_OPEN_URL');
const SECRET = env('XI_SECRET');
const MODELS = env('XI_MODELS');
const OUT = env('BROWSER_TEST_OUT');
const CHROMIUM = process.env.CHROMIUM || '/usr/bin/chromium';

const ADMIN = { username: 'admin', password: 'admin-pw' };
const LISTER = { username: 'lister', password: 'lister-pw' };
const EMBED_UID = 'all-MiniLM-L6-v2';
const LLM_UID = 'smollm2-instruct';
const RERANK_UID = 'ui-cross-encoder';
const FIXTURE = fileURLToPath(new URL('../../crates/engine/tests/fixtures/minilm_cross_encoder.json', import.meta.url));
const scratch = mkdtempSync(join(tmpdir(), 'xi-browser-'));

let browser;
let shots = 0;
const problems = []; // console errors and page errors, checked at the end

async function newPage() {
  const context = await browser.newContext({ viewport: { width: 1280, height: 860 } });
  const page = await context.newPage();
  page.setDefaultTimeout(30_000);
  page.on('pageerror', (err) => problems.push(`page error: ${err.message}`));
  page.on('console', (msg) => {
    // Chrome logs every non-2xx fetch; the 401/403/404 the tests provoke are expected.
    if (msg.type() === 'error' && !msg.text().startsWith('Failed to load resource')) {
      problems.push(`console: ${msg.text()}`);
    }
  });
  return page;
}

async function shot(page, name) {
  shots += 1;
  const file = join(OUT, `${String(shots).padStart(2, '0')}-${name}.png`);
  await page.screenshot({ path: file, fullPage: true });
  return file;
}

async function login(page, { username, password }) {
  await page.goto(`${URL_AUTH}/`);
  await page.locator('#login-form').waitFor();
  await page.fill('#username', username);
  await page.fill('#password', password);
  await page.click('#login-submit');
  await page.waitForURL(/#\/models$/);
}

/** A JWT the server itself would issue, signed with its key, but expired a minute ago. */
function expiredToken(sub, scopes) {
  const b64 = (value) => Buffer.from(JSON.stringify(value)).toString('base64url');
  const now = Math.floor(Date.now() / 1000);
  const unsigned = `${b64({ alg: 'HS256', typ: 'JWT' })}.${b64({ sub, scopes, iat: now - 3600, exp: now - 60 })}`;
  const signature = createHmac('sha256', SECRET).update(unsigned).digest('base64url');
  return `${unsigned}.${signature}`;
}

async function fillLaunchForm(page, fields) {
  for (const [id, value] of Object.entries(fields)) {
    if (id === 'launch-type') await page.selectOption('#launch-type', value);
    else await page.fill(`#${id}`, value);
  }
}

before(async () => {
  mkdirSync(OUT, { recursive: true });
  browser = await chromium.launch({
    executablePath: CHROMIUM,
    headless: true,
    // Playwright gives every launch a fresh, empty --user-data-dir itself. The network flags
    // keep Chromium from calling home (the CI machine has no internet).
    args: [
      '--no-sandbox',
      '--disable-gpu',
      '--disable-quic',
      '--no-first-run',
      '--disable-background-networking',
      '--disable-component-update',
      '--disable-sync',
    ],
  });
});

after(async () => {
  if (browser) await browser.close();
  rmSync(scratch, { recursive: true, force: true });
});

describe('web UI with auth on', () => {
  let page;

  test('the root redirects to the UI, which starts at the login page', async () => {
    page = await newPage();
    const res = await page.goto(`${URL_AUTH}/`);
    assert.equal(res.status(), 200);
    await page.waitForURL(/\/ui\/#\/login$/);
    await page.locator('#login-form').waitFor();
    assert.equal(await page.locator('#nav').isVisible(), false, 'no navigation before login');
    assert.equal(await page.locator('#logout').isVisible(), false);
    await shot(page, 'login-page');
  });

  test('a wrong password shows the server message and stays on the login page', async () => {
    await page.fill('#username', ADMIN.username);
    await page.fill('#password', 'not-the-password');
    await page.click('#login-submit');
    await page.locator('#login-error', { hasText: 'Incorrect username or password' }).waitFor();
    assert.match(page.url(), /#\/login$/);
    assert.equal(await page.evaluate(() => sessionStorage.getItem('xinference.token')), null);
    await shot(page, 'wrong-password');
  });

  test('logging in stores the token in sessionStorage and shows the running models', async () => {
    await page.fill('#password', ADMIN.password);
    await page.click('#login-submit');
    await page.waitForURL(/#\/models$/);
    await page.locator('#models-body .empty', { hasText: 'No model is running' }).waitFor();
    const token = await page.evaluate(() => sessionStorage.getItem('xinference.token'));
    assert.equal(token.split('.').length, 3);
    assert.match(await page.locator('#who-name').innerText(), /admin/);
    assert.equal(await page.locator('#logout').isVisible(), true);
    await shot(page, 'admin-models-empty');
  });

  test('the admin launches the embedding model from the catalogue and embeds text', async () => {
    await page.click('#nav a[data-page="launch"]');
    // Picking the catalogue entry fills the form; the path points at the local test model.
    const entry = page.locator(`#catalogue-list li[data-name="${EMBED_UID}"]`);
    await entry.locator('button', { hasText: 'Use' }).click();
    assert.equal(await page.inputValue('#launch-type'), 'embedding');
    assert.equal(await page.inputValue('#launch-name'), EMBED_UID);
    await fillLaunchForm(page, { 'launch-path': join(MODELS, 'all-MiniLM-L6-v2'), 'launch-replicas': '1' });
    await page.click('#launch-submit');
    await page.locator('#launch-status', { hasText: `${EMBED_UID} is running.` }).waitFor({ timeout: 120_000 });
    await page.locator('.notice.ok', { hasText: `Launched ${EMBED_UID}` }).waitFor();
    await shot(page, 'launched-embedding');

    await page.click('#nav a[data-page="models"]');
    const row = page.locator(`#models-table tr[data-uid="${EMBED_UID}"]`);
    await row.waitFor();
    const cells = await row.locator('td').allInnerTexts();
    assert.deepEqual(cells.slice(0, 5), [EMBED_UID, EMBED_UID, 'embedding', 'pytorch', 'none']);
    assert.equal(cells[6], '1', 'one replica');

    await row.locator('a', { hasText: 'Try' }).click();
    await page.waitForURL(/#\/try\?model=/);
    await page.locator('#embed-model:not([disabled])').waitFor();
    assert.equal(await page.inputValue('#embed-model'), EMBED_UID);
    await page.click('#embed-run');
    await page.locator('#embed-similarity').waitFor();
    assert.equal(await page.locator('#embed-table tbody tr').count(), 3);
    assert.match(await page.locator('#embed-result p').first().innerText(), /3 vectors of 384 dimensions/);
    // The real model: the cat sentences are closer to each other than to the stock market.
    const sims = await page.locator('#embed-similarity tbody tr').first().locator('td').allInnerTexts();
    const [self, cat, stocks] = sims.map(Number);
    assert.ok(Math.abs(self - 1) < 1e-3, `self-similarity ${self}`);
    assert.ok(cat > stocks + 0.2, `similar ${cat} vs unrelated ${stocks}`);
    await shot(page, 'embeddings');
  });

  test('the admin launches the SmolLM2 GGUF and the chat answer streams in', async () => {
    await page.click('#nav a[data-page="launch"]');
    await page.locator(`#catalogue-list li[data-name="${LLM_UID}"]`).waitFor();
    await fillLaunchForm(page, {
      'launch-type': 'LLM',
      'launch-name': LLM_UID,
      'launch-format': 'ggufv2',
      'launch-quantization': 'Q4_1',
      'launch-size': '0_135',
      'launch-path': join(MODELS, 'SmolLM2-135M-Instruct.Q4_1.gguf'),
    });
    await page.click('#launch-submit');
    await page.locator('#launch-status', { hasText: `${LLM_UID} is running.` }).waitFor({ timeout: 120_000 });

    await page.click('#nav a[data-page="models"]');
    await page.locator(`#models-table tr[data-uid="${LLM_UID}"]`).waitFor();
    const cells = await page.locator(`#models-table tr[data-uid="${LLM_UID}"] td`).allInnerTexts();
    assert.deepEqual(cells.slice(0, 6), [LLM_UID, LLM_UID, 'LLM', 'ggufv2', 'Q4_1', '0.135']);
    await page.locator(`#models-table tr[data-uid="${LLM_UID}"] a`, { hasText: 'Chat' }).click();
    await page.waitForURL(/#\/chat\?model=/);
    await page.locator('#chat-model:not([disabled])').waitFor();
    assert.equal(await page.inputValue('#chat-model'), LLM_UID);

    // Record the assistant text each time the page changes it: streamed text grows in steps.
    await page.evaluate(() => {
      window.__lengths = [];
      new MutationObserver(() => {
        const answer = document.querySelector('#chat-log .msg.assistant .content');
        if (answer) window.__lengths.push(answer.textContent.length);
      }).observe(document.querySelector('#chat-log'), { childList: true, subtree: true, characterData: true });
    });
    await page.fill('#chat-max-tokens', '64');
    await page.fill('#chat-temperature', '0');
    await page.fill('#chat-input', 'Write a short poem about the sea.');
    await page.press('#chat-input', 'Enter');
    await page.locator('#chat-log .msg.user', { hasText: 'poem about the sea' }).waitFor();
    await page.waitForFunction(() => {
      const a = document.querySelector('#chat-log .msg.assistant .content');
      return a && a.textContent.length > 0;
    });
    await shot(page, 'chat-streaming');
    await page.locator('#chat-log .content.streaming').waitFor({ state: 'detached', timeout: 120_000 });
    await page.locator('#chat-stats', { hasText: 'tokens/s' }).waitFor();
    const answer = await page.locator('#chat-log .msg.assistant .content').innerText();
    const lengths = await page.evaluate(() => window.__lengths);
    const steps = [...new Set(lengths.filter((n) => n > 0))];
    assert.ok(answer.trim().length > 10, `an answer: ${JSON.stringify(answer)}`);
    assert.ok(steps.length >= 5, `the answer grew in steps, not at once: ${JSON.stringify(lengths)}`);
    assert.deepEqual(steps, [...steps].sort((a, b) => a - b), 'the text only grows');
    await shot(page, 'chat-done');
  });

  test('a custom rerank model: registered from JSON, launched from the catalogue, reranking, terminated, unregistered', async () => {
    const folder = join(scratch, 'cross-encoder');
    const fixture = buildCrossEncoder(join(MODELS, 'all-MiniLM-L6-v2'), FIXTURE, folder);
    await page.click('#nav a[data-page="registrations"]');
    await page.selectOption('#reg-type', 'rerank');
    await page.locator('#reg-list .empty', { hasText: 'No custom rerank model' }).waitFor();
    const definition = {
      model_name: RERANK_UID,
      type: 'normal',
      language: ['en'],
      max_tokens: 512,
      model_specs: [{ model_format: 'pytorch', model_uri: folder, quantization: 'none' }],
    };
    await page.fill('#reg-json', JSON.stringify(definition, null, 2));
    await page.uncheck('#reg-persist');
    await page.click('#reg-submit');
    const row = page.locator(`#reg-table tr[data-name="${RERANK_UID}"]`);
    await row.waitFor();
    await row.locator('button', { hasText: 'Show' }).click();
    await page.locator('#reg-detail', { hasText: '"is_builtin": false' }).waitFor();
    await shot(page, 'registrations');

    // The registration is in the catalogue, marked custom, and launches without a path.
    await page.click('#nav a[data-page="launch"]');
    const entry = page.locator(`#catalogue-list li[data-name="${RERANK_UID}"]`);
    await entry.locator('.badge.custom').waitFor();
    await entry.locator('button', { hasText: 'Use' }).click();
    assert.equal(await page.inputValue('#launch-type'), 'rerank');
    await page.click('#launch-submit');
    await page.locator('#launch-status', { hasText: `${RERANK_UID} is running.` }).waitFor({ timeout: 120_000 });

    await page.evaluate((uid) => { location.hash = `#/try?model=${uid}`; }, RERANK_UID);
    await page.locator('#rerank-model:not([disabled])').waitFor();
    assert.equal(await page.inputValue('#rerank-model'), RERANK_UID);
    const pairs = fixture.pairs.slice(0, 3);
    await page.fill('#rerank-query', pairs[0][0]);
    await page.fill('#rerank-docs', pairs.map((p) => p[1]).join('\n'));
    await page.click('#rerank-run');
    await page.locator('#rerank-table tbody tr').nth(2).waitFor();
    const best = await page.locator('#rerank-table tbody tr').first().locator('td').allInnerTexts();
    const scores = fixture.scores.slice(0, 3);
    const top = scores.indexOf(Math.max(...scores));
    assert.equal(best[2], pairs[top][1], 'the best document per PyTorch');
    assert.ok(Math.abs(Number(best[1]) - scores[top]) < 1e-3, `score ${best[1]} vs PyTorch ${scores[top]}`);
    await shot(page, 'rerank');

    // Terminate (two clicks: the first arms the button).
    await page.click('#nav a[data-page="models"]');
    const terminate = page.locator(`#models-table tr[data-uid="${RERANK_UID}"] button.terminate`);
    await terminate.click();
    await page.locator(`#models-table tr[data-uid="${RERANK_UID}"] button.terminate`, { hasText: 'Really terminate?' }).waitFor();
    await terminate.click();
    await page.locator('.notice.ok', { hasText: `Terminated ${RERANK_UID}` }).waitFor();
    await page.locator(`#models-table tr[data-uid="${RERANK_UID}"]`).waitFor({ state: 'detached' });

    await page.click('#nav a[data-page="registrations"]');
    await page.selectOption('#reg-type', 'rerank');
    await page.locator(`#reg-table tr[data-name="${RERANK_UID}"] button.unregister`).click();
    await page.locator('.notice.ok', { hasText: `Unregistered ${RERANK_UID}` }).waitFor();
    await page.locator('#reg-list .empty', { hasText: 'No custom rerank model' }).waitFor();

    // A bad definition: the server's reason is shown, the page stays usable.
    await page.fill('#reg-json', '{"model_name": "x"}');
    await page.click('#reg-submit');
    await page.locator('.notice.error', { hasText: 'model_specs' }).waitFor();
  });

  test('text from the server is shown as text, never run as markup', async () => {
    await page.click('#nav a[data-page="launch"]');
    const evil = '<img src=x onerror="window.__xss=1">';
    await fillLaunchForm(page, { 'launch-type': 'embedding', 'launch-name': evil, 'launch-path': '' });
    await page.click('#launch-submit');
    const notice = page.locator('.notice.error').last();
    await notice.waitFor();
    assert.ok((await notice.innerText()).includes(evil), await notice.innerText());
    assert.equal(await page.locator('#notices img').count(), 0);
    assert.equal(await page.evaluate(() => window.__xss), undefined);
  });

  test('the cluster page shows the worker, its heartbeat and resources', async () => {
    await page.click('#nav a[data-page="cluster"]');
    const host = new URL(URL_AUTH).host;
    await page.locator('#heartbeat-table td', { hasText: host }).waitFor();
    const headers = await page.locator('#heartbeat-table th').allInnerTexts();
    assert.match(headers[1], /update.time|heartbeat/i, `the heartbeat comes first: ${headers}`);
    assert.match(await page.locator('#heartbeat-table tbody td').nth(1).innerText(), /s ago$/);
    await page.locator('#nodes-table td', { hasText: 'Worker' }).waitFor();
    await page.locator('#cluster-workers td', { hasText: `${EMBED_UID}-0` }).waitFor();
    await page.locator('#cluster-summary', { hasText: 'worker reporting' }).waitFor();
    await shot(page, 'cluster');
  });

  test('logging out forgets the token and returns to the login page', async () => {
    await page.click('#logout');
    await page.locator('#login-message', { hasText: 'You are logged out.' }).waitFor();
    assert.equal(await page.evaluate(() => sessionStorage.getItem('xinference.token')), null);
    await page.evaluate(() => { location.hash = '#/chat'; });
    await page.waitForURL(/#\/login$/);
    await shot(page, 'logged-out');
    await page.context().close();
  });

  test('a list-only user sees disabled controls and a 403 message when forcing a launch', async () => {
    page = await newPage();
    await login(page, LISTER);
    const terminate = page.locator(`#models-table tr[data-uid="${EMBED_UID}"] button.terminate`);
    await terminate.waitFor();
    assert.equal(await terminate.isDisabled(), true);
    assert.equal(await terminate.getAttribute('title'), 'Requires the models:stop permission');
    assert.equal(await page.locator('#nav a[data-page="cluster"]').getAttribute('aria-disabled'), 'true');
    await shot(page, 'lister-models');

    await page.click('#nav a[data-page="launch"]');
    await page.locator(`#catalogue-list li[data-name="${EMBED_UID}"]`).waitFor();
    for (const id of ['launch-submit', 'launch-name', 'launch-path', 'launch-type']) {
      assert.equal(await page.locator(`#${id}`).isDisabled(), true, `${id} is disabled`);
      assert.equal(await page.locator(`#${id}`).getAttribute('title'), 'Requires the models:start permission');
    }
    await page.locator('.denied-hint', { hasText: 'requires the models:start permission' }).waitFor();
    await shot(page, 'lister-launch-disabled');

    // Forcing it: the browser's guard is gone, the server's is not.
    await page.evaluate(() => {
      for (const el of document.querySelectorAll('#launch-form [disabled]')) el.disabled = false;
    });
    await fillLaunchForm(page, { 'launch-type': 'embedding', 'launch-name': EMBED_UID, 'launch-uid': 'forced', 'launch-path': join(MODELS, 'all-MiniLM-L6-v2') });
    await page.click('#launch-submit');
    await page.locator('.notice.error', { hasText: 'Not enough permissions for launching a model (requires models:start).' }).waitFor();
    await shot(page, 'lister-forced-403');
    // Still logged in and usable.
    assert.match(page.url(), /#\/launch$/);
    await page.fill('#catalogue-filter', 'smol');
    await page.locator('#catalogue-list li[data-name="smollm2-instruct"]').waitFor();
    assert.equal(await page.locator(`#catalogue-list li[data-name="${EMBED_UID}"]`).count(), 0);
    await page.click('#nav a[data-page="models"]');
    await page.locator(`#models-table tr[data-uid="${EMBED_UID}"]`).waitFor();
    assert.equal(await page.locator('#models-table tr[data-uid="forced"]').count(), 0);
    await page.context().close();
  });

  test('a token the server rejects (tampered, then expired) returns to login with a message', async () => {
    page = await newPage();
    await login(page, ADMIN);
    await page.locator(`#models-table tr[data-uid="${EMBED_UID}"]`).waitFor();

    // Tampered: a valid-looking token whose signature the server refuses.
    await page.evaluate(() => {
      const t = sessionStorage.getItem('xinference.token');
      sessionStorage.setItem('xinference.token', t.slice(0, -4) + (t.endsWith('AAAA') ? 'BBBB' : 'AAAA'));
    });
    await page.click('#refresh-models');
    await page.locator('#login-message', { hasText: 'Your session expired, please log in.' }).waitFor();
    await page.waitForURL(/#\/login$/);
    assert.equal(await page.evaluate(() => sessionStorage.getItem('xinference.token')), null);
    await shot(page, 'session-expired');

    // Logging in again goes back where the user was.
    await page.fill('#username', ADMIN.username);
    await page.fill('#password', ADMIN.password);
    await page.click('#login-submit');
    await page.waitForURL(/#\/models$/);

    // Expired: correctly signed with the server's key, but past its exp. The page still on
    // screen uses it for its next call, and the server refuses it.
    await page.locator(`#models-table tr[data-uid="${EMBED_UID}"]`).waitFor();
    const expired = expiredToken(ADMIN.username, ['admin']);
    await page.evaluate((t) => sessionStorage.setItem('xinference.token', t), expired);
    await page.click('#refresh-models');
    await page.locator('#login-message', { hasText: 'Your session expired, please log in.' }).waitFor();
    assert.equal(await page.evaluate(() => sessionStorage.getItem('xinference.token')), null);

    // Opening the page with an expired token leads to the login page without sending it.
    const sent = [];
    page.on('request', (r) => {
      if (r.headers().authorization === `Bearer ${expired}`) sent.push(r.url());
    });
    await page.evaluate((t) => sessionStorage.setItem('xinference.token', t), expired);
    await page.goto(`${URL_AUTH}/ui/#/chat`);
    await page.locator('#login-message', { hasText: 'Your session expired, please log in.' }).waitFor();
    await page.waitForURL(/#\/login$/);
    assert.deepEqual(sent, []);
    await page.context().close();
  });
});

describe('web UI with auth off', () => {
  test('no login page, no logout, every control enabled', async () => {
    const page = await newPage();
    await page.goto(`${URL_OPEN}/`);
    await page.waitForURL(/\/ui\/#\/models$/);
    await page.locator('#models-body .empty').waitFor();
    assert.equal(await page.locator('#who').isVisible(), false);
    assert.equal(await page.locator('#auth-off').isVisible(), true);
    assert.equal(await page.locator('#nav a[data-page="cluster"]').getAttribute('aria-disabled'), null);
    await page.evaluate(() => { location.hash = '#/login'; });
    await page.waitForURL(/#\/models$/);
    await page.click('#nav a[data-page="launch"]');
    await page.locator('#catalogue-list li[data-name="smollm2-instruct"]').waitFor();
    assert.equal(await page.locator('#launch-submit').isDisabled(), false);
    assert.equal(await page.locator('#catalogue-list button[disabled]').count(), 0);
    assert.equal(await page.locator('.denied-hint').count(), 0);
    await shot(page, 'auth-off-launch');
    await page.context().close();
  });

  test('no console errors, CSP violations or page errors happened', () => {
    assert.deepEqual(problems, []);
  });
});
