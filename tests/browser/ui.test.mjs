// The web UI in a real browser (headless Debian Chromium driven by playwright-core) against the
// real xinference-local with auth on, serving the real test models. Started by
// scripts/browser-test.sh, which provides:
//
//   XI_URL         server with --auth-config (users below; the identity store is on too)
//   XI_STORE_URL   server with --auth alone: the identity store's first admin
//   XI_STORE_LOG   that server's stderr, where it prints the first admin's password
//   XI_OPEN_URL    server without auth
//   XI_SECRET      the auth config's secret_key (to sign an expired token)
//   XI_MODELS      folder of the test models (scripts/fetch-test-models.sh)
//   CHROMIUM       the browser (default /usr/bin/chromium)
//   BROWSER_TEST_OUT  where the screenshots go
//   XI_UI_DIR      optional: serve the UI files from this folder instead of the binary's
//
// The steps run in order and share the server: the admin launches the models that later steps
// (the list-only user, the chat) see.

import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { createHmac } from 'node:crypto';
import { mkdirSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { buildCrossEncoder } from './cross-encoder.mjs';
import { env, launchBrowser, newPage as freshPage, refreshWith, screenshots } from './support.mjs';

const URL_AUTH = env('XI_URL');
const URL_OPEN = env('XI_OPEN_URL');
const URL_STORE = env('XI_STORE_URL');
const STORE_LOG = env('XI_STORE_LOG');
const UI_DIR = process.env.XI_UI_DIR || '';
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
const shot = screenshots(OUT);
const problems = []; // console errors and page errors, checked at the end

/** A page in a fresh context; the UI's files from XI_UI_DIR when it is set. */
const newPage = () => freshPage(browser, problems, { uiDir: UI_DIR });

async function login(page, { username, password }, url = URL_AUTH) {
  await page.goto(`${url}/`);
  await page.locator('#login-form').waitFor();
  await page.fill('#username', username);
  await page.fill('#password', password);
  await page.click('#login-submit');
  await page.waitForURL(/#\/models$/);
  await page.locator('#main[data-page="models"]').waitFor({ state: 'attached' });
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
  browser = await launchBrowser(CHROMIUM);
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

  test('the Users page lists the config file\'s users read-only; they change no password here', async () => {
    await page.click('#nav a[data-page="users"]');
    const row = page.locator('#users-table tr[data-username="lister"]');
    await row.waitFor();
    assert.deepEqual((await row.locator('td').allInnerTexts()).slice(1, 5), ['config', 'yes', 'no', 'models:list']);
    assert.equal(await row.locator('td.actions').innerText(), 'config file, read-only');
    assert.equal(await page.locator('#users-table button').count(), 0);
    assert.equal(await page.locator('#change-password').isVisible(), false, 'config users have no id');
  });

  test('logging out ends the session on the server, forgets the tokens and returns to the login page', async () => {
    const refresh = await page.evaluate(() => sessionStorage.getItem('xinference.refresh'));
    assert.ok(refresh, 'the login stored a refresh token');
    await page.click('#logout');
    await page.locator('#login-message', { hasText: 'You are logged out.' }).waitFor();
    assert.equal(await page.evaluate(() => sessionStorage.getItem('xinference.token')), null);
    assert.equal(await page.evaluate(() => sessionStorage.getItem('xinference.refresh')), null);
    assert.equal((await refreshWith(URL_AUTH, refresh)).status, 401, 'the session is over');
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

  test('a refused token is renewed once with the refresh token; without one, back to login with a message', async () => {
    page = await newPage();
    await login(page, ADMIN);
    await page.locator(`#models-table tr[data-uid="${EMBED_UID}"]`).waitFor();
    const tamper = () => page.evaluate(() => {
      const t = sessionStorage.getItem('xinference.token');
      sessionStorage.setItem('xinference.token', t.slice(0, -4) + (t.endsWith('AAAA') ? 'BBBB' : 'AAAA'));
      return sessionStorage.getItem('xinference.token');
    });

    // Tampered: a valid-looking token whose signature the server refuses. The page renews the
    // session (a new pair of tokens) and the call goes through: the user sees nothing.
    const oldRefresh = await page.evaluate(() => sessionStorage.getItem('xinference.refresh'));
    const tampered = await tamper();
    const renewed = page.waitForResponse((r) => r.url().endsWith('/v1/auth/refresh') && r.status() === 200);
    await page.click('#refresh-models');
    await renewed;
    await page.locator(`#models-table tr[data-uid="${EMBED_UID}"]`).waitFor();
    const now = await page.evaluate(() => [sessionStorage.getItem('xinference.token'), sessionStorage.getItem('xinference.refresh')]);
    assert.notEqual(now[0], tampered);
    assert.notEqual(now[1], oldRefresh, 'the refresh token rotated');
    assert.match(page.url(), /#\/models$/);

    // Tampered again, and the refresh token is one the server has already used (a stolen copy):
    // the server ends the session, and the page goes back to the login.
    await tamper();
    await page.evaluate((t) => sessionStorage.setItem('xinference.refresh', t), oldRefresh);
    await page.click('#refresh-models');
    await page.locator('#login-message', { hasText: 'Your session expired, please log in.' }).waitFor();
    await page.waitForURL(/#\/login$/);
    assert.equal(await page.evaluate(() => sessionStorage.getItem('xinference.token')), null);
    assert.equal(await page.evaluate(() => sessionStorage.getItem('xinference.refresh')), null);
    assert.equal((await refreshWith(URL_AUTH, now[1])).status, 401, 'reuse ended the whole session');
    await shot(page, 'session-expired');

    // Logging in again goes back where the user was.
    await page.fill('#username', ADMIN.username);
    await page.fill('#password', ADMIN.password);
    await page.click('#login-submit');
    await page.waitForURL(/#\/models$/);

    // Expired: correctly signed with the server's key, but past its exp, and no refresh token.
    // The page still on screen uses it for its next call, and the server refuses it.
    await page.locator(`#models-table tr[data-uid="${EMBED_UID}"]`).waitFor();
    const refresh = await page.evaluate(() => sessionStorage.getItem('xinference.refresh'));
    const expired = expiredToken(ADMIN.username, ['admin']);
    await page.evaluate((t) => {
      sessionStorage.setItem('xinference.token', t);
      sessionStorage.removeItem('xinference.refresh');
    }, expired);
    await page.click('#refresh-models');
    await page.locator('#login-message', { hasText: 'Your session expired, please log in.' }).waitFor();
    assert.equal(await page.evaluate(() => sessionStorage.getItem('xinference.token')), null);

    // Opening the page with an expired token never sends it: with a refresh token the page
    // renews the session first and opens the page asked for; without one, the login page.
    const sent = [];
    page.on('request', (r) => {
      if (r.headers().authorization === `Bearer ${expired}`) sent.push(r.url());
    });
    await page.evaluate(([t, r]) => {
      sessionStorage.setItem('xinference.token', t);
      sessionStorage.setItem('xinference.refresh', r);
    }, [expired, refresh]);
    await page.goto(`${URL_AUTH}/ui/#/registrations`);
    await page.locator('#reg-list').waitFor();
    assert.match(page.url(), /#\/registrations$/);
    assert.notEqual(await page.evaluate(() => sessionStorage.getItem('xinference.token')), expired);
    await page.evaluate((t) => {
      sessionStorage.setItem('xinference.token', t);
      sessionStorage.removeItem('xinference.refresh');
    }, expired);
    await page.goto(`${URL_AUTH}/ui/#/chat`);
    await page.locator('#login-message', { hasText: 'Your session expired, please log in.' }).waitFor();
    await page.waitForURL(/#\/login$/);
    assert.deepEqual(sent, []);
    await page.context().close();
  });
});

describe('web UI with the identity store (--auth)', () => {
  // The first admin's password, printed once on the server's stderr.
  const first = /First admin of the identity store: username "admin", password "([^"]+)"/.exec(readFileSync(STORE_LOG, 'utf8'));
  const STORE_ADMIN = { username: 'admin', password: first ? first[1] : '' };
  const NEW_ADMIN_PW = 'admin-chosen-pw';
  const BOB = { username: 'bob', password: 'bob-password' };
  let page;
  let launched; // the embedding model, launched through the API while the UI steps run
  const keys = {}; // name -> the key shown once

  test('the first admin must choose a new password before anything else', async () => {
    assert.ok(first, 'the server printed the first admin');
    page = await newPage();
    await page.goto(`${URL_STORE}/`);
    await page.locator('#login-form').waitFor();
    await page.fill('#username', STORE_ADMIN.username);
    await page.fill('#password', STORE_ADMIN.password);
    await page.click('#login-submit');
    await page.waitForURL(/#\/password$/);
    await page.locator('#password-message', { hasText: 'must get a new password' }).waitFor();
    assert.equal(await page.inputValue('#current-password'), STORE_ADMIN.password, 'prefilled from the login');
    assert.equal(await page.locator('#nav').isVisible(), false, 'no other page until it is changed');
    assert.equal(await page.locator('#logout').isVisible(), true);
    // Any other page leads back here.
    await page.evaluate(() => { location.hash = '#/models'; });
    await page.waitForURL(/#\/password$/);
    await shot(page, 'store-forced-password');

    await page.fill('#new-password', NEW_ADMIN_PW);
    await page.fill('#repeat-password', 'something-else');
    await page.click('#password-submit');
    await page.locator('#password-error', { hasText: 'The two new passwords differ.' }).waitFor();
    await page.fill('#repeat-password', NEW_ADMIN_PW);
    await page.click('#password-submit');
    await page.waitForURL(/#\/models$/);
    await page.locator('.notice.ok', { hasText: 'Your password is changed.' }).waitFor();
    for (const name of ['users', 'keys', 'audit']) {
      assert.equal(await page.locator(`#nav a[data-page="${name}"]`).isVisible(), true, `${name} in the nav`);
    }
    assert.equal(await page.locator('#nav a[data-page="keys"]').innerText(), 'API keys');
    assert.equal(await page.locator('#change-password').isVisible(), true);

    // A model for the keys below: launched through the API, loading while the next steps run.
    const token = await page.evaluate(() => sessionStorage.getItem('xinference.token'));
    launched = fetch(`${URL_STORE}/v1/models`, {
      method: 'POST',
      headers: { 'Content-Type': 'application/json', Authorization: `Bearer ${token}` },
      body: JSON.stringify({ model_type: 'embedding', model_name: EMBED_UID, model_path: join(MODELS, 'all-MiniLM-L6-v2') }),
    });
  });

  test('the admin adds bob on the Users page; the server\u2019s refusals show as errors', async () => {
    await page.click('#nav a[data-page="users"]');
    const adminRow = page.locator('#users-table tr[data-username="admin"]');
    await adminRow.waitFor();
    assert.deepEqual((await adminRow.locator('td').allInnerTexts()).slice(1, 5), ['local', 'yes', 'no', 'admin']);

    await page.fill('#new-username', BOB.username);
    await page.fill('#new-user-password', BOB.password);
    await page.uncheck('#new-user-must-change');
    assert.equal(await page.isChecked('#new-perm-models-list'), true);
    assert.equal(await page.isChecked('#new-perm-models-read'), true);
    await page.check('#new-perm-keys-create');
    await page.click('#user-submit');
    await page.locator('.notice.ok', { hasText: 'Added bob.' }).waitFor();
    const bobRow = page.locator('#users-table tr[data-username="bob"]');
    await bobRow.waitFor();
    const perms = (await bobRow.locator('td.permissions').innerText()).split(', ');
    assert.deepEqual([...perms].sort(), ['keys:create', 'models:list', 'models:read']);
    assert.equal(await bobRow.locator('td.must-change').innerText(), 'no');

    // The last admin cannot disable itself: the server says why.
    await adminRow.locator('button.toggle').click();
    await page.locator('.notice.error', { hasText: 'last enabled admin' }).waitFor();
    assert.equal(await adminRow.locator('td.enabled').innerText(), 'yes');
    await shot(page, 'store-users');
  });

  test('logging out ends the session; bob logs in and sees only his pages', async () => {
    const refresh = await page.evaluate(() => sessionStorage.getItem('xinference.refresh'));
    await page.click('#logout');
    await page.locator('#login-message', { hasText: 'You are logged out.' }).waitFor();
    assert.equal((await refreshWith(URL_STORE, refresh)).status, 401);
    await page.context().close();

    page = await newPage();
    await page.context().grantPermissions(['clipboard-read', 'clipboard-write'], { origin: URL_STORE });
    await login(page, BOB, URL_STORE);
    await page.locator('#who-name', { hasText: 'bob' }).waitFor();
    assert.equal(await page.locator('#nav a[data-page="keys"]').innerText(), 'My keys');
    assert.equal(await page.locator('#nav a[data-page="users"]').isVisible(), false);
    assert.equal(await page.locator('#nav a[data-page="audit"]').isVisible(), false);
    // Forcing the page: the UI says why, the server would refuse anyway.
    await page.evaluate(() => { location.hash = '#/users'; });
    await page.locator('.denied-hint', { hasText: 'requires the users:manage permission' }).waitFor();
  });

  test('bob creates a key for every model and one for a model: each shown once, then by prefix only', async () => {
    await page.click('#nav a[data-page="keys"]');
    await page.locator('#keys-list .empty', { hasText: 'No API key yet.' }).waitFor();
    await page.fill('#key-name', 'every-model');
    await page.click('#key-submit');
    const value = page.locator('#new-key-value');
    await value.waitFor();
    keys.every = await value.innerText();
    assert.match(keys.every, /^xf-[A-Za-z0-9]{48}$/);
    await page.locator('#new-key', { hasText: 'It will not be shown again' }).waitFor();
    await page.click('#new-key-copy');
    await page.locator('.notice.ok', { hasText: 'The key is copied.' }).waitFor();
    assert.equal(await page.evaluate(() => navigator.clipboard.readText()), keys.every);
    const everyRow = page.locator(`#keys-table tr[data-prefix="${keys.every.slice(0, 7)}"]`);
    await everyRow.waitFor();
    assert.equal(await everyRow.locator('td.models').innerText(), 'all');
    await shot(page, 'store-key-shown');

    // The second key: one model, an expiry, a limit.
    assert.ok((await launched).ok, 'the embedding model is running');
    await page.reload();
    await page.locator(`#key-models option[value="${EMBED_UID}"]`).waitFor({ state: 'attached' });
    await page.fill('#key-name', 'embed-only');
    const nextYear = `${new Date().getUTCFullYear() + 1}-06-30`;
    await page.fill('#key-expires', nextYear);
    await page.selectOption('#key-models', [EMBED_UID]);
    await page.click('details.limits summary');
    await page.fill('#key-limit-requests_per_minute', '30');
    await page.click('#key-submit');
    await page.locator('#new-key h2', { hasText: 'embed-only' }).waitFor();
    keys.embed = await page.locator('#new-key-value').innerText();
    assert.notEqual(keys.embed, keys.every);

    // The key works, for its model only.
    const models = await fetch(`${URL_STORE}/v1/models`, { headers: { Authorization: `Bearer ${keys.embed}` } });
    assert.equal(models.status, 200);
    assert.deepEqual((await models.json()).data.map((m) => m.id), [EMBED_UID]);

    // After a reload the keys are listed by prefix only; the page holds them nowhere.
    await page.reload();
    const embedRow = page.locator(`#keys-table tr[data-prefix="${keys.embed.slice(0, 7)}"]`);
    await embedRow.waitFor();
    assert.equal(await page.locator('#new-key').isVisible(), false);
    const html = await page.content();
    assert.ok(!html.includes(keys.every) && !html.includes(keys.embed), 'no key in the page');
    const cells = await embedRow.locator('td').allInnerTexts();
    assert.deepEqual(cells.slice(0, 6), [`${keys.embed.slice(0, 7)}\u2026`, 'embed-only', 'bob', 'yes', nextYear, EMBED_UID]);
    assert.match(await embedRow.locator('td.usage').innerText(), /^\d+ requests, \d+ tokens$/);
    await shot(page, 'store-keys-listed');
  });

  test('bob disables and revokes the key; the server refuses it from then on', async () => {
    const row = page.locator(`#keys-table tr[data-prefix="${keys.embed.slice(0, 7)}"]`);
    await row.locator('button.toggle').click();
    await page.locator('.notice.ok', { hasText: 'Disabled the key' }).waitFor();
    await page.locator(`#keys-table tr[data-prefix="${keys.embed.slice(0, 7)}"] td.enabled`, { hasText: 'no' }).waitFor();
    const disabled = await fetch(`${URL_STORE}/v1/models`, { headers: { Authorization: `Bearer ${keys.embed}` } });
    assert.equal(disabled.status, 401);

    const revoke = row.locator('button.revoke');
    await revoke.click();
    await row.locator('button.revoke', { hasText: 'Really revoke?' }).waitFor();
    await revoke.click();
    await page.locator('.notice.ok', { hasText: 'Revoked the key' }).waitFor();
    await row.waitFor({ state: 'detached' });
    const revoked = await fetch(`${URL_STORE}/v1/models`, { headers: { Authorization: `Bearer ${keys.embed}` } });
    assert.equal(revoked.status, 401);
    await page.context().close();
  });

  test('the admin\u2019s audit page shows the logins and key creations, filters and pages back', async () => {
    page = await newPage();
    await login(page, { username: 'admin', password: NEW_ADMIN_PW }, URL_STORE);
    await page.click('#nav a[data-page="audit"]');
    await page.locator('#audit-table tr[data-action="key.revoke"]').waitFor();
    const actions = await page.locator('#audit-table td.action').allInnerTexts();
    for (const action of ['login', 'logout', 'user.password', 'user.create', 'key.create', 'key.update', 'key.revoke']) {
      assert.ok(actions.includes(action), `${action} in ${actions}`);
    }
    const ids = (await page.locator('#audit-table tbody tr').evaluateAll((rows) => rows.map((r) => Number(r.dataset.id))));
    assert.deepEqual(ids, [...ids].sort((a, b) => b - a), 'newest first');
    await shot(page, 'store-audit');

    await page.fill('#audit-username', 'bob');
    await page.fill('#audit-action', 'key.create');
    await page.click('#audit-apply');
    await page.waitForFunction(() => document.querySelectorAll('#audit-table tbody tr').length === 2
      && [...document.querySelectorAll('#audit-table td.action')].every((td) => td.textContent === 'key.create'));
    assert.deepEqual([...new Set(await page.locator('#audit-table td.username').allInnerTexts())], ['bob']);

    // Two at a time: "Older" asks for the events before the last one shown.
    await page.evaluate(() => { location.hash = '#/audit?limit=2'; });
    await page.waitForFunction(() => document.querySelectorAll('#audit-table tbody tr').length === 2);
    const older = page.waitForRequest((r) => r.url().includes(`before_id=${ids[1]}`));
    await page.click('#audit-older');
    await older;
    await page.waitForFunction(() => document.querySelectorAll('#audit-table tbody tr').length === 4);
    const paged = await page.locator('#audit-table tbody tr').evaluateAll((rows) => rows.map((r) => Number(r.dataset.id)));
    assert.deepEqual(paged, ids.slice(0, 4));
    await page.context().close();
  });
});

describe('API docs page', () => {
  test('the docs page renders every operation of the OpenAPI document, and filters them', async () => {
    const page = await newPage();
    const res = await page.goto(`${URL_AUTH}/docs`);
    assert.equal(res.status(), 200);
    assert.match(res.headers()['content-security-policy'], /script-src 'sha256-/);
    await page.locator('#ops section details').first().waitFor();
    const doc = await (await fetch(`${URL_AUTH}/openapi.json`)).json();
    const operations = Object.values(doc.paths).reduce((n, item) => n + Object.keys(item).length, 0);
    assert.ok(operations > 60, `${operations} operations`);
    assert.equal(await page.locator('#ops details').count(), operations);
    assert.equal(await page.locator('#title').textContent(), `xinference-rs ${doc.info.version}`);
    await page.fill('#filter', '/v1/chat/completions');
    assert.equal(await page.locator('#ops details:not([hidden])').count(), 1);
    await page.locator('#ops details:not([hidden]) summary').click();
    await page.locator('#ops details:not([hidden]) pre').first().waitFor();
    assert.match(await page.locator('#ops details:not([hidden])').textContent(), /needs models:read/);
    await shot(page, 'api-docs');
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
