//! Pages: the HTML shells of the overview, camera and lab pages, the login form, and the assets
//! compiled into the binary (uPlot 1.6.32, MIT, `assets/uplot-LICENSE`; our script and styles).
//! The shells carry only the page kind and the camera id; `assets/app.js` fetches the rest from
//! the API and renders it (text through `textContent`, never as HTML).

use axum::extract::Path;
use axum::http::{header, StatusCode};
use axum::response::{Html, IntoResponse, Response};

const APP_JS: &str = include_str!("assets/app.js");
const APP_CSS: &str = include_str!("assets/app.css");
const UPLOT_JS: &str = include_str!("assets/uplot.iife.min.js");
const UPLOT_CSS: &str = include_str!("assets/uplot.min.css");

/// Scripts and styles from this origin only; images also as blobs (snapshots refresh).
const CSP: &str =
    "default-src 'self'; img-src 'self' blob: data:; style-src 'self' 'unsafe-inline'; \
                   script-src 'self'; frame-ancestors 'none'; form-action 'self'";

fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
        .replace('\'', "&#39;")
}

fn shell(title: &str, page: &str, camera: Option<&str>, charts: bool) -> Response {
    let camera_attr = camera
        .map(|c| format!(" data-camera=\"{}\"", escape(c)))
        .unwrap_or_default();
    let chart_css = if charts {
        "<link rel=\"stylesheet\" href=\"/assets/uplot.min.css\">"
    } else {
        ""
    };
    let chart_js = if charts {
        "<script src=\"/assets/uplot.iife.min.js\"></script>"
    } else {
        ""
    };
    let html = format!(
        "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
         <title>{title} · promptcam</title>{chart_css}<link rel=\"stylesheet\" href=\"/assets/app.css\"></head>\
         <body data-page=\"{page}\"{camera_attr}><header><a class=\"brand\" href=\"/\">promptcam</a>\
         <nav id=\"nav\"></nav></header><main id=\"main\"><p class=\"muted\">Loading…</p></main>\
         {chart_js}<script src=\"/assets/app.js\"></script></body></html>\n",
        title = escape(title),
    );
    (
        [
            (header::CONTENT_SECURITY_POLICY, CSP),
            (header::CACHE_CONTROL, "no-store"),
        ],
        Html(html),
    )
        .into_response()
}

pub async fn overview() -> Response {
    shell("Cameras", "overview", None, false)
}

pub async fn camera(Path(camera): Path<String>) -> Response {
    shell(&format!("Camera {camera}"), "camera", Some(&camera), true)
}

pub async fn lab(Path(camera): Path<String>) -> Response {
    shell(
        &format!("Prompt lab · {camera}"),
        "lab",
        Some(&camera),
        true,
    )
}

/// The login form; `wrong` after a refused token.
pub fn login(wrong: bool) -> Response {
    let note = if wrong {
        "<p class=\"error\">That token is not right.</p>"
    } else {
        ""
    };
    let html = format!(
        "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\"><title>Log in · promptcam</title>\
         <link rel=\"stylesheet\" href=\"/assets/app.css\"></head><body><header><span class=\"brand\">promptcam</span></header>\
         <main><form class=\"card login\" method=\"post\" action=\"/login\"><h1>Log in</h1>{note}\
         <p>Paste the token from the file named by <code>token_file</code> in the <code>[http]</code> table.</p>\
         <input type=\"password\" name=\"token\" autocomplete=\"current-password\" required autofocus>\
         <button type=\"submit\">Log in</button></form></main></body></html>\n"
    );
    let code = if wrong {
        StatusCode::UNAUTHORIZED
    } else {
        StatusCode::OK
    };
    (code, [(header::CONTENT_SECURITY_POLICY, CSP)], Html(html)).into_response()
}

pub async fn asset(Path(file): Path<String>) -> Response {
    let (body, kind) = match file.as_str() {
        "app.js" => (APP_JS, "text/javascript; charset=utf-8"),
        "app.css" => (APP_CSS, "text/css; charset=utf-8"),
        "uplot.iife.min.js" => (UPLOT_JS, "text/javascript; charset=utf-8"),
        "uplot.min.css" => (UPLOT_CSS, "text/css; charset=utf-8"),
        _ => return (StatusCode::NOT_FOUND, "no such asset\n").into_response(),
    };
    (
        [
            (header::CONTENT_TYPE, kind),
            (header::CACHE_CONTROL, "max-age=300"),
        ],
        body,
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn camera_ids_are_escaped_into_the_shell() {
        assert_eq!(escape("a\"><script>"), "a&quot;&gt;&lt;script&gt;");
    }
}
