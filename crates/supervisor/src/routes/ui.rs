//! The web UI: static files embedded in the binary (no CDN, works offline), served at `/ui/`.
//!
//! These routes are public (the page itself logs in through `POST /token` and sends the token
//! on every API call), so the files must never depend on who asks. Every answer carries a strict
//! Content-Security-Policy (scripts and styles only from this origin, no inline code), `nosniff`
//! and no framing. Files are revalidated on each load (`no-cache` + ETag), so a new binary's UI is
//! picked up at once without hashed file names.

use std::hash::{DefaultHasher, Hasher};
use std::sync::LazyLock;

use actix_web::http::header;
use actix_web::{web, HttpRequest, HttpResponse};

use crate::error::SupervisorError;

/// `default-src 'self'` covers scripts, styles, images, fonts and `fetch`; nothing inline, no
/// plugins, no `<base>` tricks, no framing by other sites, forms post only here.
pub const CONTENT_SECURITY_POLICY: &str = "default-src 'self'; script-src 'self'; \
     style-src 'self'; img-src 'self'; connect-src 'self'; object-src 'none'; \
     base-uri 'none'; frame-ancestors 'none'; form-action 'self'";

const HTML: &str = "text/html; charset=utf-8";
const JS: &str = "text/javascript; charset=utf-8";
const CSS: &str = "text/css; charset=utf-8";
const SVG: &str = "image/svg+xml";

/// Every file of `crates/supervisor/ui/`, with its content type. A unit test checks that this
/// list and the folder agree, so a new module cannot be forgotten.
const FILES: &[(&str, &str, &[u8])] = &[
    ("index.html", HTML, include_bytes!("../../ui/index.html")),
    ("style.css", CSS, include_bytes!("../../ui/style.css")),
    ("favicon.svg", SVG, include_bytes!("../../ui/favicon.svg")),
    ("app.js", JS, include_bytes!("../../ui/app.js")),
    ("api.js", JS, include_bytes!("../../ui/api.js")),
    ("session.js", JS, include_bytes!("../../ui/session.js")),
    ("dom.js", JS, include_bytes!("../../ui/dom.js")),
    (
        "page-login.js",
        JS,
        include_bytes!("../../ui/page-login.js"),
    ),
    (
        "page-models.js",
        JS,
        include_bytes!("../../ui/page-models.js"),
    ),
    (
        "page-launch.js",
        JS,
        include_bytes!("../../ui/page-launch.js"),
    ),
    ("page-chat.js", JS, include_bytes!("../../ui/page-chat.js")),
    (
        "page-users.js",
        JS,
        include_bytes!("../../ui/page-users.js"),
    ),
    ("page-keys.js", JS, include_bytes!("../../ui/page-keys.js")),
    (
        "page-audit.js",
        JS,
        include_bytes!("../../ui/page-audit.js"),
    ),
    (
        "page-password.js",
        JS,
        include_bytes!("../../ui/page-password.js"),
    ),
    ("page-try.js", JS, include_bytes!("../../ui/page-try.js")),
    (
        "page-registrations.js",
        JS,
        include_bytes!("../../ui/page-registrations.js"),
    ),
    (
        "page-cluster.js",
        JS,
        include_bytes!("../../ui/page-cluster.js"),
    ),
];

struct Asset {
    name: &'static str,
    content_type: &'static str,
    body: &'static [u8],
    etag: String,
}

/// The files with their ETags, hashed once. `DefaultHasher::new()` has fixed keys, so a tag is
/// stable for one binary and changes when a file does.
static ASSETS: LazyLock<Vec<Asset>> = LazyLock::new(|| {
    FILES
        .iter()
        .map(|&(name, content_type, body)| {
            let mut hasher = DefaultHasher::new();
            hasher.write(body);
            Asset {
                name,
                content_type,
                body,
                etag: format!("\"{:016x}\"", hasher.finish()),
            }
        })
        .collect()
});

/// To the web UI. Temporary, so a browser does not remember it forever; a relative location,
/// so it also works behind a proxy that adds a path prefix.
fn redirect_to_ui() -> HttpResponse {
    HttpResponse::TemporaryRedirect()
        .insert_header((header::LOCATION, "ui/"))
        .finish()
}

/// `GET /`: to the web UI.
#[utoipa::path(
    get,
    path = "/",
    tag = "ui",
    summary = "Redirect to the web UI",
    responses(
        (status = 307, description = "To the web UI", headers(("Location" = String))),
    )
)]
pub async fn to_ui() -> HttpResponse {
    redirect_to_ui()
}

/// `GET /ui`: to the web UI.
#[utoipa::path(
    get,
    path = "/ui",
    tag = "ui",
    summary = "Redirect to the web UI",
    responses(
        (status = 307, description = "To the web UI", headers(("Location" = String))),
    )
)]
pub async fn ui_to_ui() -> HttpResponse {
    redirect_to_ui()
}

/// `GET /ui/`: the page.
#[utoipa::path(
    get,
    path = "/ui/",
    tag = "ui",
    summary = "The web UI",
    responses(
        (status = 200, description = "The web UI", body = String, content_type = "text/html"),
    )
)]
pub async fn index(req: HttpRequest) -> Result<HttpResponse, SupervisorError> {
    serve(&req, "index.html")
}

/// `GET /ui/{file}`: one of the page's files; anything else is a JSON 404 like any unknown route.
#[utoipa::path(
    get,
    path = "/ui/{file}",
    tag = "ui",
    summary = "A file of the web UI",
    params(("file" = String, Path, description = "One of the page's files")),
    responses(
        (status = 200, description = "The file", body = String),
        (status = 404, description = "No such file", body = xi_api::ErrorBody),
    )
)]
pub async fn asset(
    req: HttpRequest,
    file: web::Path<String>,
) -> Result<HttpResponse, SupervisorError> {
    serve(&req, &file)
}

fn serve(req: &HttpRequest, name: &str) -> Result<HttpResponse, SupervisorError> {
    let Some(asset) = ASSETS.iter().find(|a| a.name == name) else {
        return Err(SupervisorError::NotFound(
            "No such file in the web UI".into(),
        ));
    };
    let fresh = req
        .headers()
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|tags| tags.split(',').any(|t| t.trim() == asset.etag));
    let mut response = match fresh {
        true => HttpResponse::NotModified(),
        false => HttpResponse::Ok(),
    };
    response
        .insert_header((header::CACHE_CONTROL, "no-cache"))
        .insert_header((header::ETAG, asset.etag.as_str()))
        .insert_header((header::CONTENT_SECURITY_POLICY, CONTENT_SECURITY_POLICY))
        .insert_header((header::X_CONTENT_TYPE_OPTIONS, "nosniff"))
        .insert_header((header::X_FRAME_OPTIONS, "DENY"))
        .insert_header((header::REFERRER_POLICY, "no-referrer"));
    if fresh {
        return Ok(response.finish());
    }
    Ok(response
        .insert_header((header::CONTENT_TYPE, asset.content_type))
        .body(asset.body))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_file_of_the_ui_folder_is_embedded_and_nothing_else() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("ui");
        let mut on_disk: Vec<String> = std::fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        on_disk.sort();
        let mut embedded: Vec<String> = FILES.iter().map(|f| f.0.to_string()).collect();
        embedded.sort();
        assert_eq!(
            embedded, on_disk,
            "FILES must list exactly the files of ui/"
        );
    }

    #[test]
    fn content_types_follow_the_extension() {
        for (name, content_type, _) in FILES {
            let want = match name.rsplit_once('.').map(|(_, ext)| ext) {
                Some("html") => HTML,
                Some("js") => JS,
                Some("css") => CSS,
                Some("svg") => SVG,
                other => panic!("{name}: no content type for extension {other:?}"),
            };
            assert_eq!(*content_type, want, "{name}");
        }
    }

    #[test]
    fn the_page_loads_no_inline_script_or_style_and_nothing_from_elsewhere() {
        let page = std::str::from_utf8(FILES[0].2).unwrap();
        assert!(page.contains("<script type=\"module\" src=\"app.js\"></script>"));
        for forbidden in [
            "<style", " style=", "onclick", "onload", "http://", "https://",
        ] {
            assert!(
                !page.contains(forbidden),
                "index.html contains {forbidden:?}"
            );
        }
        for (name, _, body) in FILES {
            let text = std::str::from_utf8(body).unwrap();
            assert!(!text.contains("innerHTML"), "{name} uses innerHTML");
            assert!(!text.contains("https://"), "{name} loads from elsewhere");
        }
    }
}
