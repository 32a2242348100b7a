//! Playing the browser at the test provider: its login, consent, device and logout pages,
//! driven with a cookie-keeping client that stops at the redirect back to our server.

use std::sync::LazyLock;

use regex::Regex;
use reqwest::Url;

use super::*;

/// A client for the helpers below: a cookie store (the IdP's session and interaction cookies,
/// and our server's `xi_oidc_state`) and no redirect following (the helpers follow them so
/// they can stop at the right one). The test can use the same client for the callback.
pub fn browser_client() -> reqwest::Client {
    reqwest::Client::builder()
        .cookie_store(true)
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap_or_else(|e| panic!("build the browser-like reqwest client: {e}"))
}

/// Logs in as `login` (any password) and consents, starting from `authorize_url` (our server's
/// `/api/oidc/authorize?...`, which redirects to the IdP, or the IdP's own authorization URL),
/// through the IdP's login and consent forms (skipped when the client's cookies already hold
/// an IdP session or grant). Returns the URL of the redirect back to `/api/oidc/callback` (with
/// `code`, `state` and `iss`, or `error`) WITHOUT requesting it.
///
/// `client` must keep cookies and not follow redirects: use [`browser_client`], a fresh one
/// per user: with an IdP session in its cookies the IdP signs that session's user in again
/// without asking (unless the authorization request says `prompt=login`), whatever `login` is.
/// Panics with the page or error when the flow goes anywhere else.
pub async fn browserless_login(
    client: &reqwest::Client,
    authorize_url: &str,
    login: &str,
) -> String {
    login_to_callback(client, authorize_url, login, false).await
}

/// Like [`browserless_login`], but the user cancels on the consent page: returns the redirect
/// back to `/api/oidc/callback` with `error=access_denied` (and `state`), unrequested.
pub async fn browserless_deny(
    client: &reqwest::Client,
    authorize_url: &str,
    login: &str,
) -> String {
    login_to_callback(client, authorize_url, login, true).await
}

/// [`browserless_login`] (`refuse` false: consents) and [`browserless_deny`] (`refuse` true:
/// cancels on the consent page): drives the flow from `authorize_url` as `login` to the
/// redirect back to `/api/oidc/callback`, returned unrequested; panics with the page when the
/// flow ends on one instead.
async fn login_to_callback(
    client: &reqwest::Client,
    authorize_url: &str,
    login: &str,
    refuse: bool,
) -> String {
    let act = Act {
        login: Some(login),
        user_code: None,
        refuse,
    };
    let what = if refuse {
        "the refused login"
    } else {
        "the login"
    };
    match drive(client, authorize_url, act, |url| {
        url.path() == CALLBACK_PATH
    })
    .await
    {
        End::Redirect(url) => url,
        End::Page(url, page) => panic!(
            "{what} as {login} from {authorize_url} ended on a page at {url} instead of a \
             redirect to {CALLBACK_PATH}: {}",
            excerpt(&page)
        ),
    }
}

/// The user's side of the device flow: opens `verification_uri` (or `verification_uri_complete`,
/// which carries the code itself), enters `user_code`, confirms, logs in as `login` and
/// consents, until the IdP's "Sign-in Success" page. The device's token poll succeeds after.
/// `client` as for [`browserless_login`] (a fresh [`browser_client`] is the usual choice: the
/// user's browser is not the device).
pub async fn complete_device_login(
    client: &reqwest::Client,
    verification_uri: &str,
    user_code: &str,
    login: &str,
) {
    device_to_page(client, verification_uri, user_code, Some(login)).await;
}

/// The user aborts the device flow on the IdP's confirmation page: the device's token poll then
/// gets `access_denied`.
pub async fn deny_device_login(client: &reqwest::Client, verification_uri: &str, user_code: &str) {
    device_to_page(client, verification_uri, user_code, None).await;
}

/// [`complete_device_login`] (`login` given: through to the "Sign-in Success" page) and
/// [`deny_device_login`] (none: aborted at the confirmation, the page says "interrupted");
/// panics with the page when the flow ends on another.
async fn device_to_page(
    client: &reqwest::Client,
    verification_uri: &str,
    user_code: &str,
    login: Option<&str>,
) {
    let act = Act {
        login,
        user_code: Some(user_code),
        refuse: login.is_none(),
    };
    let marker = if login.is_some() {
        "Sign-in Success"
    } else {
        "interrupted"
    };
    match drive(client, verification_uri, act, |_| false).await {
        End::Page(_, page) if page.contains(marker) => {}
        End::Page(url, page) => match login {
            Some(login) => panic!(
                "the device login as {login} with code {user_code} ended at {url} without \
                 success: {}",
                excerpt(&page)
            ),
            None => panic!(
                "aborting the device login with code {user_code} ended at {url} unexpectedly: {}",
                excerpt(&page)
            ),
        },
        End::Redirect(url) => unreachable!("drive stopped at {url} without a stop rule"),
    }
}

/// RP-initiated logout as the browser does it: from `logout_url` (our server's
/// `/api/oidc/logout?...`, or the IdP's end-session URL) through the IdP's "sign out?"
/// confirmation (answered yes) to the redirect back to `/ui/` (with `state` when one was
/// sent), which is returned unrequested. Without an IdP session the IdP skips the question.
pub async fn browserless_logout(client: &reqwest::Client, logout_url: &str) -> String {
    let act = Act {
        login: None,
        user_code: None,
        refuse: false,
    };
    match drive(client, logout_url, act, |url| {
        url.path() == POST_LOGOUT_PATH
    })
    .await
    {
        End::Redirect(url) => url,
        End::Page(url, page) => panic!(
            "the logout from {logout_url} ended on a page at {url} instead of a redirect to \
             {POST_LOGOUT_PATH}: {}",
            excerpt(&page)
        ),
    }
}

/// What the simulated user does on the IdP's pages.
#[derive(Clone, Copy)]
struct Act<'a> {
    /// The login name for the login form (any password goes).
    login: Option<&'a str>,
    /// The code for the device flow's code form.
    user_code: Option<&'a str>,
    /// Cancel at the consent page, abort at the device confirmation.
    refuse: bool,
}

/// Where [`drive`] stopped.
enum End {
    /// A redirect the stop rule accepted: its absolute URL, not requested.
    Redirect(String),
    /// A page without a form to submit: its URL and HTML.
    Page(String, String),
}

/// Plays the browser from `start`: follows redirects, fills and submits the IdP's forms
/// (login, consent, device code, device confirmation, logout confirmation, and the
/// self-submitting `form_post` pages), until a redirect `stop` accepts or a page with no form.
async fn drive(
    client: &reqwest::Client,
    start: &str,
    act: Act<'_>,
    stop: impl Fn(&Url) -> bool,
) -> End {
    let mut url = Url::parse(start).unwrap_or_else(|e| panic!("not a URL: {start}: {e}"));
    let mut form: Option<Vec<(String, String)>> = None;
    for _ in 0..MAX_STEPS {
        let request = match &form {
            Some(fields) => client.post(url.clone()).form(fields),
            None => client.get(url.clone()),
        };
        let method = if form.is_some() { "POST" } else { "GET" };
        let response = request
            .send()
            .await
            .unwrap_or_else(|e| panic!("{method} {url}: {e}"));
        if response.url() != &url {
            panic!(
                "{method} {url} ended at {}: the client follows redirects; build it with \
                 xi_testkit::oidc::browser_client() (cookies on, redirects off)",
                response.url()
            );
        }
        let status = response.status();
        if status.is_redirection() {
            let location = response
                .headers()
                .get(reqwest::header::LOCATION)
                .and_then(|v| v.to_str().ok())
                .unwrap_or_else(|| panic!("{method} {url}: HTTP {status} without a Location"));
            let next = url
                .join(location)
                .unwrap_or_else(|e| panic!("{method} {url}: bad Location {location:?}: {e}"));
            if stop(&next) {
                return End::Redirect(next.into());
            }
            url = next;
            form = None;
            continue;
        }
        let page = response
            .text()
            .await
            .unwrap_or_else(|e| panic!("{method} {url}: read the page: {e}"));
        if status != StatusCode::OK {
            let hint = if page.contains("interaction session") || page.contains("could not find") {
                " (the IdP lost its session cookie: does the client keep cookies? use \
                 xi_testkit::oidc::browser_client())"
            } else {
                ""
            };
            panic!("{method} {url}: HTTP {status}{hint}: {}", excerpt(&page));
        }
        let Some(found) = forms(&page).into_iter().next() else {
            return End::Page(url.into(), page);
        };
        let mut fields = found.hidden;
        let value = |fields: &[(String, String)], name: &str| {
            fields
                .iter()
                .find(|(k, _)| k == name)
                .map(|(_, v)| v.clone())
        };
        match (found.id.as_deref(), value(&fields, "prompt").as_deref()) {
            (_, Some("login")) => {
                let login = act.login.unwrap_or_else(|| {
                    panic!("{url}: the IdP asks for a login, and this helper has none")
                });
                fields.push(("login".into(), login.into()));
                fields.push(("password".into(), "any password".into()));
            }
            (_, Some("consent")) if act.refuse => {
                // The consent page's "[ Cancel ]" link.
                let abort = ABORT_LINK
                    .captures(&page)
                    .map(|c| unescape_html(&c[1]))
                    .unwrap_or_else(|| panic!("{url}: no cancel link on the consent page"));
                url = url
                    .join(&abort)
                    .unwrap_or_else(|e| panic!("{url}: bad cancel link: {e}"));
                form = None;
                continue;
            }
            (Some("op.deviceInputForm"), _) => {
                if let Some(message) = ERROR_MESSAGE.captures(&page) {
                    if act.refuse && message[1].contains("interrupted") {
                        return End::Page(url.into(), page);
                    }
                    panic!("{url}: the IdP's device page says: {}", &message[1]);
                }
                let code = act.user_code.unwrap_or_else(|| {
                    panic!("{url}: the IdP asks for a device user code, and this helper has none")
                });
                fields.push(("user_code".into(), code.into()));
            }
            (Some("op.deviceConfirmForm"), _) if act.refuse => {
                // The "[ Abort ]" button instead of "Continue".
                fields.retain(|(k, _)| k != "confirm");
                fields.push(("abort".into(), "yes".into()));
            }
            // "Yes, sign me out" (its button sits outside the form and adds this field).
            (Some("op.logoutForm"), _) => fields.push(("logout".into(), "yes".into())),
            // Device confirmation ("Continue"), consent, and the self-submitting form_post
            // pages: submitted as they are.
            _ => {}
        }
        url = url
            .join(&found.action)
            .unwrap_or_else(|e| panic!("{url}: bad form action {:?}: {e}", found.action));
        form = Some(fields);
    }
    panic!("no end after {MAX_STEPS} requests from {start} (last: {url})");
}

/// A form of one of the IdP's pages: what is needed to submit it.
struct Form {
    id: Option<String>,
    action: String,
    hidden: Vec<(String, String)>,
}

static FORM: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"(?s)<form\b([^>]*)>(.*?)</form>").expect("valid regex"));
static INPUT: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"(?s)<input\b[^>]*>").expect("valid regex"));
static ATTR: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r#"(?s)\b(id|action|type|name|value)\s*=\s*"([^"]*)""#).expect("valid regex")
});
static ABORT_LINK: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r#"href="([^"]*/abort)""#).expect("valid regex"));
static ERROR_MESSAGE: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r#"<p class="red">([^<]*)</p>"#).expect("valid regex"));

/// The forms of a page with their id, action and hidden inputs. A small regex parser is
/// enough: the pages are oidc-provider's own, with double-quoted attributes.
fn forms(html: &str) -> Vec<Form> {
    let attrs = |tag: &str| -> Vec<(String, String)> {
        ATTR.captures_iter(tag)
            .map(|c| (c[1].to_owned(), unescape_html(&c[2])))
            .collect()
    };
    let get = |attrs: &[(String, String)], name: &str| {
        attrs
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.clone())
    };
    FORM.captures_iter(html)
        .map(|form| {
            let own = attrs(&form[1]);
            let hidden = INPUT
                .find_iter(&form[2])
                .map(|input| attrs(input.as_str()))
                .filter(|a| get(a, "type").as_deref() == Some("hidden"))
                .filter_map(|a| Some((get(&a, "name")?, get(&a, "value").unwrap_or_default())))
                .collect();
            Form {
                id: get(&own, "id"),
                action: get(&own, "action").unwrap_or_default(),
                hidden,
            }
        })
        .collect()
}

/// Undoes oidc-provider's HTML escaping (`&amp; &lt; &gt; &quot; &#39;`).
fn unescape_html(s: &str) -> String {
    s.replace("&quot;", "\"")
        .replace("&#39;", "'")
        .replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&amp;", "&")
}

/// A page cut down for a panic message: the text of its `<pre>` error lines when it has them
/// (our renderError), else its start.
fn excerpt(page: &str) -> String {
    static PRE: LazyLock<Regex> =
        LazyLock::new(|| Regex::new(r"(?s)<pre>(.*?)</pre>").expect("valid regex"));
    let pre: Vec<String> = PRE
        .captures_iter(page)
        .map(|c| unescape_html(&c[1]))
        .collect();
    if !pre.is_empty() {
        return pre.join("\n");
    }
    page.chars().take(1500).collect()
}
