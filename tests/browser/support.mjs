// Helpers shared by the browser tests (ui.test.mjs, sso.test.mjs): their environment, the
// browser, fresh pages (optionally serving the UI's files from XI_UI_DIR, and collecting
// console and page errors), screenshots, and the refresh call. Not a test file itself:
// scripts/browser-test.sh names the test files to run.

import { existsSync, readFileSync } from 'node:fs';
import { extname, join } from 'node:path';
import { chromium } from 'playwright-core';

/** The environment variable `name`, which scripts/browser-test.sh sets. */
export const env = (name) => {
  const value = process.env[name];
  if (!value) throw new Error(`${name} is not set; run scripts/browser-test.sh`);
  return value;
};

// The headers the server sends with every UI file (crates/supervisor/src/routes/ui.rs).
const UI_HEADERS = {
  'content-security-policy': "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self'; "
    + "connect-src 'self'; object-src 'none'; base-uri 'none'; frame-ancestors 'none'; form-action 'self'",
  'x-content-type-options': 'nosniff',
  'cache-control': 'no-cache',
};
const UI_TYPES = { '.html': 'text/html; charset=utf-8', '.js': 'text/javascript; charset=utf-8', '.css': 'text/css; charset=utf-8', '.svg': 'image/svg+xml' };

/** Headless Chromium at `executablePath`. */
export function launchBrowser(executablePath) {
  return chromium.launch({
    executablePath,
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
}

/**
 * A page in a fresh context of `browser`: its own cookies and sessionStorage. Page errors and
 * console errors are pushed onto `problems` (the tests check it is empty at the end).
 *
 *   uiDir         serve the UI's files from this folder instead of the server's (XI_UI_DIR)
 *   origin        only that origin's `/` and `/ui/` come from uiDir (default: any origin's)
 *   loopbackOnly  abort every request to a host other than 127.0.0.1
 *   consoleUrl    name the page's address in each console error
 */
export async function newPage(browser, problems, { uiDir = '', origin = '', loopbackOnly = false, consoleUrl = false } = {}) {
  const context = await browser.newContext({ viewport: { width: 1280, height: 860 } });
  if (loopbackOnly) {
    await context.route((url) => url.hostname !== '127.0.0.1', (route) => route.abort());
  }
  if (uiDir) {
    // UI work without rebuilding the binary: its files come from the folder, the API from it.
    // Requests that follow a redirect are not routed: `/` moves on to `ui/` with a new
    // navigation, and a redirect to /ui/ gets the binary's index.html (the scripts it loads
    // come from the folder).
    const ours = (url) => !origin || url.origin === origin;
    await context.route((url) => ours(url) && url.pathname === '/', (route) => route.fulfill({
      status: 200,
      headers: { 'content-type': 'text/html' },
      body: '<meta http-equiv="refresh" content="0; url=ui/">',
    }));
    await context.route((url) => ours(url) && url.pathname.startsWith('/ui/'), (route) => {
      const name = new URL(route.request().url()).pathname.slice('/ui/'.length) || 'index.html';
      const file = join(uiDir, name);
      if (name.includes('/') || !existsSync(file)) return route.continue();
      return route.fulfill({ status: 200, headers: { ...UI_HEADERS, 'content-type': UI_TYPES[extname(name)] }, body: readFileSync(file) });
    });
  }
  const page = await context.newPage();
  page.setDefaultTimeout(30_000);
  page.on('pageerror', (err) => problems.push(`page error: ${err.message}`));
  page.on('console', (msg) => {
    // Chrome logs every non-2xx fetch (the 401/403/404 the tests provoke are expected) and
    // every aborted request.
    if (msg.type() === 'error' && !msg.text().startsWith('Failed to load resource')) {
      problems.push(consoleUrl ? `console (${page.url()}): ${msg.text()}` : `console: ${msg.text()}`);
    }
  });
  return page;
}

/** A `shot(page, name)` that saves full-page screenshots in `out` as `<prefix>NN-<name>.png`. */
export function screenshots(out, prefix = '') {
  let shots = 0;
  return async function shot(page, name) {
    shots += 1;
    const file = join(out, `${prefix}${String(shots).padStart(2, '0')}-${name}.png`);
    await page.screenshot({ path: file, fullPage: true });
    return file;
  };
}

/** `POST /v1/auth/refresh` to the server at `url`, from outside the browser. */
export function refreshWith(url, refreshToken) {
  return fetch(`${url}/v1/auth/refresh`, {
    method: 'POST',
    headers: { 'Content-Type': 'application/json' },
    body: JSON.stringify({ refresh_token: refreshToken }),
  });
}
