// Single sign-on in a real browser (headless Debian Chromium driven by playwright-core): the web
// UI of the real xinference-local with the identity store and one OpenID Connect provider, the
// real test identity provider of tests/oidc (panva's oidc-provider, its development login,
// consent and logout pages). Started by scripts/browser-test.sh, which provides:
//
//   XI_SSO_URL     server with --auth --oidc-config: provider `testidp` ("Test IdP"), client
//                  xi-web; group xi-admins -> admin, xi-users -> models:list + models:read
//   XI_SSO_LOG     that server's stderr, where it prints the first admin's password
//   XI_IDP_URL     the provider's issuer, http://127.0.0.1:PORT
//   CHROMIUM       the browser (default /usr/bin/chromium)
//   BROWSER_TEST_OUT  where the screenshots go (sso-NN-*.png)
//   XI_UI_DIR      optional: serve the UI files from this folder instead of the binary's
//
// Accounts at the provider: any login with any password; alice is in xi-admins, bob in
// xi-users. The server must be reached as 127.0.0.1: the provider accepts only loopback
// redirect URIs, and the server derives its redirect_uri from the Host it was reached at.
//
// The steps run in order and share the server: alice's first login creates her user, which the
// Users page then lists.

import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdirSync, readFileSync } from 'node:fs';
import { env, launchBrowser, newPage as freshPage, refreshWith, screenshots } from './support.mjs';

const URL_SSO = env('XI_SSO_URL');
const SSO_LOG = env('XI_SSO_LOG');
const URL_IDP = env('XI_IDP_URL');
const UI_DIR = process.env.XI_UI_DIR || '';
const OUT = env('BROWSER_TEST_OUT');
const CHROMIUM = process.env.CHROMIUM || '/usr/bin/chromium';

const PROVIDER = 'testidp';
const SSO_ORIGIN = new URL(URL_SSO).origin;
const IDP_ORIGIN = new URL(URL_IDP).origin;

let browser;
const shot = screenshots(OUT, 'sso-');
const problems = []; // console errors and page errors, checked at the end

/** A page in a fresh context: its own cookies (no provider session) and sessionStorage. */
function newPage() {
  // Only the two local servers: the provider's pages @import a web font, which must neither
  // leave the machine nor hold up their load event. With XI_UI_DIR, as in ui.test.mjs: the
  // UI's files from the folder (this server's only), the API from the server.
  return freshPage(browser, problems, { uiDir: UI_DIR, origin: SSO_ORIGIN, loopbackOnly: true, consoleUrl: true });
}

/** Where the server's callback sent the browser (its Location), recorded for each response. */
function recordCallbacks(page) {
  const locations = [];
  page.on('response', (res) => {
    const url = new URL(res.url());
    if (url.origin === SSO_ORIGIN && url.pathname === '/api/oidc/callback') {
      locations.push({ status: res.status(), location: res.headers().location || '' });
    }
  });
  return locations;
}

/** From our login page through the provider's login and consent pages, back to our UI. */
async function ssoLogin(page, login, name) {
  const button = page.locator(`#sso-${PROVIDER}`);
  await button.waitFor();
  await button.click();
  await page.waitForURL((url) => url.origin === IDP_ORIGIN);
  const loginField = page.locator('input[name="login"]');
  await loginField.waitFor();
  await shot(page, `${name}-idp-login`);
  await loginField.fill(login);
  await page.fill('input[name="password"]', 'any password at all');
  await page.click('button[type="submit"]');
  // The consent page: same form shape, `prompt=consent`, one "Continue" button.
  const consent = page.locator('form:has(input[name="prompt"][value="consent"]) button[type="submit"]');
  await consent.waitFor();
  await shot(page, `${name}-idp-consent`);
  await consent.click();
  await page.waitForURL((url) => url.origin === SSO_ORIGIN && url.hash === '#/models');
  await page.locator('#main[data-page="models"]').waitFor({ state: 'attached' });
  await page.locator('#who-name', { hasText: login }).waitFor();
}

before(async () => {
  mkdirSync(OUT, { recursive: true });
  browser = await launchBrowser(CHROMIUM);
});

after(async () => {
  if (browser) await browser.close();
});

describe('web UI with single sign-on (OpenID Connect)', () => {
  let page;
  let handoff = ''; // alice's one-time code, from the callback's redirect

  test('the login page offers the provider; alice logs in there and lands on our UI, the code gone from the address', async () => {
    page = await newPage();
    const callbacks = recordCallbacks(page);
    await page.goto(`${URL_SSO}/`);
    await page.waitForURL(/\/ui\/#\/login$/);
    await page.locator('#login-form').waitFor();
    const button = page.locator(`#sso-${PROVIDER}`);
    await button.waitFor();
    assert.equal(await button.innerText(), 'Log in with Test IdP');
    assert.equal(await page.locator('#sso-providers button').count(), 1, 'one provider, one button');
    await shot(page, 'login-page');

    await ssoLogin(page, 'alice', 'alice');
    // The callback sent the browser to /ui/#/sso/<code>; the page traded it and replaced it.
    assert.equal(callbacks.length, 1, JSON.stringify(callbacks));
    assert.equal(callbacks[0].status, 302);
    const back = new URL(callbacks[0].location, URL_SSO);
    assert.equal(back.pathname, '/ui/');
    assert.match(back.hash, /^#\/sso\/[^/]+$/);
    handoff = back.hash.slice('#/sso/'.length);
    assert.ok(!page.url().includes('#/sso/'), page.url());
    assert.ok(!page.url().includes(handoff), 'the code is not in the address');

    const stored = await page.evaluate(() => ({
      token: sessionStorage.getItem('xinference.token'),
      refresh: sessionStorage.getItem('xinference.refresh'),
      provider: sessionStorage.getItem('xinference.sso_provider'),
    }));
    assert.equal(stored.token.split('.').length, 3);
    assert.ok(stored.refresh, 'a refresh token, as after a password login');
    assert.equal(stored.provider, PROVIDER);
    // alice is in xi-admins: an admin, with the identity store's pages.
    assert.match(await page.locator('#who-name').innerText(), /alice \(.*admin.*\)/);
    assert.equal(await page.locator('#logout').isVisible(), true);
    for (const name of ['users', 'keys', 'audit']) {
      assert.equal(await page.locator(`#nav a[data-page="${name}"]`).isVisible(), true, `${name} in the nav`);
    }
    assert.equal(await page.locator('#nav a[data-page="cluster"]').getAttribute('aria-disabled'), null);
    await page.locator('#models-body .empty', { hasText: 'No model is running' }).waitFor();
    await shot(page, 'alice-logged-in');
  });

  test('the one-time code works once: opened again, the login page says why', async () => {
    assert.ok(handoff, 'the first step recorded the code');
    const other = await newPage();
    await other.goto(`${URL_SSO}/ui/#/sso/${handoff}`);
    await other.locator('#login-error', { hasText: 'Invalid or expired login code' }).waitFor();
    assert.match(other.url(), /#\/login$/);
    assert.equal(await other.evaluate(() => sessionStorage.getItem('xinference.token')), null);
    await shot(other, 'code-reused');
    await other.context().close();
  });

  test('alice is a user of the identity store with source oidc, her permissions from her groups', async () => {
    await page.click('#nav a[data-page="users"]');
    const row = page.locator('#users-table tr[data-username="alice"]');
    await row.waitFor();
    const cells = await row.locator('td').allInnerTexts();
    assert.deepEqual(cells.slice(1, 4), ['oidc', 'yes', 'no'], JSON.stringify(cells));
    assert.ok(cells[4].split(', ').includes('admin'), cells[4]);
    // The first admin of the store (a password account) is there too, as a local user.
    assert.equal(await page.locator('#users-table tr[data-username="admin"] td').nth(1).innerText(), 'local');
    await shot(page, 'users-alice-oidc');

    // What the server says about her own account.
    const me = await page.evaluate(async () => {
      const res = await fetch('/v1/auth/me', { headers: { Authorization: `Bearer ${sessionStorage.getItem('xinference.token')}` } });
      return { status: res.status, body: await res.json() };
    });
    assert.equal(me.status, 200, JSON.stringify(me.body));
    assert.equal(me.body.username, 'alice');
    assert.ok(me.body.permissions.includes('admin'), JSON.stringify(me.body.permissions));
    assert.equal(me.body.must_change_password, false);
    assert.equal(me.body.source, 'oidc', `/v1/auth/me: ${JSON.stringify(me.body)}`);
  });

  test('logging out ends our session, then the provider\u2019s, and returns to our login page', async () => {
    const refresh = await page.evaluate(() => sessionStorage.getItem('xinference.refresh'));
    await page.click('#logout');
    // Our session first (the refresh token dies), then the provider's logout confirmation.
    await page.waitForURL((url) => url.origin === IDP_ORIGIN);
    const yes = page.locator('button[name="logout"][value="yes"]');
    await yes.waitFor();
    assert.equal((await yes.innerText()).trim(), 'Yes, sign me out');
    assert.equal((await refreshWith(URL_SSO, refresh)).status, 401, 'our session is over');
    await shot(page, 'idp-logout-confirm');
    await yes.click();
    await page.waitForURL((url) => url.origin === SSO_ORIGIN && url.pathname === '/ui/' && url.hash === '#/login');
    await page.locator('#login-form').waitFor();
    assert.equal(await page.locator('#nav').isVisible(), false);
    assert.equal(await page.evaluate(() => sessionStorage.getItem('xinference.token')), null);
    assert.equal(await page.evaluate(() => sessionStorage.getItem('xinference.sso_provider')), null);
    await shot(page, 'logged-out');

    // The provider's session is gone too: the button asks for a login again.
    await page.click(`#sso-${PROVIDER}`);
    await page.waitForURL((url) => url.origin === IDP_ORIGIN);
    await page.locator('input[name="login"]').waitFor();
    await page.context().close();
  });

  test('bob (group xi-users) logs in and sees only what models:list and models:read allow', async () => {
    page = await newPage();
    await page.goto(`${URL_SSO}/`);
    await page.locator('#login-form').waitFor();
    await ssoLogin(page, 'bob', 'bob');
    assert.match(await page.locator('#who-name').innerText(), /bob \(.*models:read.*\)/);
    const me = await page.evaluate(async () => {
      const res = await fetch('/v1/auth/me', { headers: { Authorization: `Bearer ${sessionStorage.getItem('xinference.token')}` } });
      return res.json();
    });
    assert.deepEqual([...me.permissions].sort(), ['models:list', 'models:read']);
    for (const name of ['users', 'keys', 'audit']) {
      assert.equal(await page.locator(`#nav a[data-page="${name}"]`).isVisible(), false, `no ${name} in the nav`);
    }
    assert.equal(await page.locator('#nav a[data-page="cluster"]').getAttribute('aria-disabled'), 'true');
    await shot(page, 'bob-models');
    // Forcing the page: the UI says why, and the server refuses the list anyway.
    await page.evaluate(() => { location.hash = '#/users'; });
    await page.locator('.denied-hint', { hasText: 'requires the users:manage permission' }).waitFor();
    const users = await page.evaluate(async () => (await fetch('/v1/admin/users', {
      headers: { Authorization: `Bearer ${sessionStorage.getItem('xinference.token')}` },
    })).status);
    assert.equal(users, 403);
    await shot(page, 'bob-users-denied');
    await page.context().close();
    assert.equal(me.source, 'oidc', `/v1/auth/me: ${JSON.stringify(me)}`);
  });

  test('a password login works beside single sign-on: the first admin, who must choose a new password', async () => {
    const first = /First admin of the identity store: username "admin", password "([^"]+)"/.exec(readFileSync(SSO_LOG, 'utf8'));
    assert.ok(first, 'the server printed the first admin');
    page = await newPage();
    await page.goto(`${URL_SSO}/`);
    await page.locator('#login-form').waitFor();
    await page.locator(`#sso-${PROVIDER}`).waitFor();
    await page.fill('#username', 'admin');
    await page.fill('#password', first[1]);
    await page.click('#login-submit');
    await page.waitForURL(/#\/password$/);
    await page.fill('#new-password', 'admin-chosen-pw');
    await page.fill('#repeat-password', 'admin-chosen-pw');
    await page.click('#password-submit');
    await page.waitForURL(/#\/models$/);
    await page.locator('#who-name', { hasText: 'admin' }).waitFor();
    assert.equal(await page.evaluate(() => sessionStorage.getItem('xinference.sso_provider')), null);
    // Both SSO users are listed beside it.
    await page.click('#nav a[data-page="users"]');
    await page.locator('#users-table tr[data-username="bob"]').waitFor();
    assert.equal(await page.locator('#users-table tr[data-username="bob"] td').nth(1).innerText(), 'oidc');
    await shot(page, 'password-admin-users');

    // A password login's logout stays here: no trip to the provider.
    await page.click('#logout');
    await page.locator('#login-message', { hasText: 'You are logged out.' }).waitFor();
    assert.equal(new URL(page.url()).origin, SSO_ORIGIN);
    await page.context().close();
  });

  test('no console errors, CSP violations or page errors happened', () => {
    assert.deepEqual(problems, []);
  });
});
