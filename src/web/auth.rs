//! Auth: who may use the HTTP listener.
//!
//! - With `[http] token_file`, every request (pages, API, `/metrics`, `/healthz`) must carry the
//!   token: `Authorization: Bearer <token>` (scripts, Prometheus) or the `promptcam_token` cookie
//!   that `/login` sets (browsers). Without it, pages redirect to `/login` and the rest get 401.
//!   A listener beyond 127.0.0.1 cannot start without a token (config validation).
//! - Without a token (loopback only), the `Host` header must name a loopback address, so a web
//!   page elsewhere cannot reach the endpoint by pointing a DNS name at 127.0.0.1.
//! - Requests that change state are POSTs. When a browser says where a request comes from
//!   (`Origin`, `Sec-Fetch-Site`), it must be this origin, for reads too: only a top-level
//!   navigation to a page (a link, a bookmark) may come from another site.
//!
//! The token is compared in constant time and never appears in a page, a log or an error.

use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{header, HeaderMap, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use crate::config::Secret;

pub const COOKIE: &str = "promptcam_token";

/// The access rules of one listener.
pub struct Guard {
    token: Option<Secret>,
    /// Whether the endpoint serves HTTPS (the login cookie is then `Secure`).
    tls: bool,
    /// Whether the listener is bound to a loopback address.
    loopback: bool,
    /// Refused logins, logged at most once a minute.
    refused: std::sync::Mutex<Refusals>,
}

/// How often refused logins are logged: the first at once, then a count at most this often, so
/// a client guessing tokens cannot fill the journal.
const REFUSAL_LOG_EVERY: std::time::Duration = std::time::Duration::from_secs(60);

/// Refused logins since the last log line.
#[derive(Default)]
pub struct Refusals {
    last_logged: Option<std::time::Instant>,
    unlogged: u64,
}

impl Refusals {
    /// Counts a refused login at `now`; returns the line to log, if one is due.
    pub fn refused(&mut self, now: std::time::Instant) -> Option<String> {
        self.unlogged += 1;
        let due = self
            .last_logged
            .is_none_or(|t| now.duration_since(t) >= REFUSAL_LOG_EVERY);
        if !due {
            return None;
        }
        let line = match self.unlogged {
            1 => "HTTP: a login with a wrong token was refused".to_string(),
            n => format!(
                "HTTP: {n} logins with a wrong token were refused since the last such line (logged at most once a minute)"
            ),
        };
        self.last_logged = Some(now);
        self.unlogged = 0;
        Some(line)
    }
}

impl Guard {
    /// `tls`: the endpoint serves HTTPS, so the login cookie is marked `Secure`.
    pub fn new(token: Option<Secret>, listen: std::net::SocketAddr, tls: bool) -> Guard {
        Guard {
            token,
            tls,
            loopback: listen.ip().is_loopback(),
            refused: Default::default(),
        }
    }

    /// Whether the request carries the token (or none is needed).
    fn authorized(&self, headers: &HeaderMap) -> bool {
        let Some(token) = &self.token else {
            return true;
        };
        let bearer = headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "));
        let cookie = headers
            .get_all(header::COOKIE)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(';'))
            .filter_map(|c| {
                c.trim()
                    .strip_prefix(COOKIE)
                    .and_then(|r| r.strip_prefix('='))
            })
            .next();
        [bearer, cookie]
            .into_iter()
            .flatten()
            .any(|given| constant_time_eq(given.trim().as_bytes(), token.expose().as_bytes()))
    }

    /// Whether the token given to `/login` is right.
    pub fn check_login(&self, given: &str) -> bool {
        match &self.token {
            Some(t) => constant_time_eq(given.trim().as_bytes(), t.expose().as_bytes()),
            None => true,
        }
    }

    pub fn needs_token(&self) -> bool {
        self.token.is_some()
    }
}

/// `subtle`'s comparison: no early exit on the first differing byte (a length mismatch is
/// told at once; the token's length is not the secret).
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    use subtle::ConstantTimeEq;
    a.ct_eq(b).into()
}

/// Whether a `Host` header names a loopback address (any port).
fn loopback_host(host: &str) -> bool {
    let name = match host.strip_prefix('[') {
        Some(rest) => rest.split(']').next().unwrap_or(""),
        None => host.rsplit_once(':').map_or(host, |(h, _)| h),
    };
    name.eq_ignore_ascii_case("localhost")
        || name
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

/// Whether a request comes from this origin, as far as the browser says (scripts and other
/// clients send neither `Sec-Fetch-Site` nor `Origin`).
fn same_origin(headers: &HeaderMap) -> bool {
    let get = |h: header::HeaderName| headers.get(h).and_then(|v| v.to_str().ok());
    if let Some(site) = headers.get("sec-fetch-site").and_then(|v| v.to_str().ok()) {
        if site != "same-origin" && site != "none" {
            return false;
        }
    }
    match (get(header::ORIGIN), get(header::HOST)) {
        (None, _) => true,
        (Some(origin), Some(host)) => {
            let origin = origin
                .strip_prefix("http://")
                .or_else(|| origin.strip_prefix("https://"));
            origin == Some(host)
        }
        (Some(_), None) => false,
    }
}

/// The HTML pages, which a link from anywhere may open.
fn is_page(path: &str) -> bool {
    path == "/" || path == "/login" || path.starts_with("/camera/") || path.starts_with("/lab/")
}

/// Whether the browser says it came from another site (or another origin of this one) for
/// anything but opening a page: a cross-site `fetch`, `<img>`, form or script of a page the
/// operator happens to visit (with the documented `ssh -L` tunnel the listener is loopback to
/// that browser too). A top-level navigation to a page (a link, a bookmark) is allowed.
fn cross_site(method: &Method, path: &str, headers: &HeaderMap) -> bool {
    if same_origin(headers) {
        return false;
    }
    let get = |h: &str| headers.get(h).and_then(|v| v.to_str().ok());
    let navigation = get("sec-fetch-mode") == Some("navigate")
        && get("sec-fetch-dest").is_none_or(|d| d == "document");
    !(method == Method::GET && navigation && is_page(path) && headers.get(header::ORIGIN).is_none())
}

fn refuse(code: StatusCode, msg: &str) -> Response {
    (
        code,
        [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
        format!("{msg}\n"),
    )
        .into_response()
}

/// The middleware in front of every route.
pub async fn guard(State(g): State<Arc<Guard>>, req: Request<Body>, next: Next) -> Response {
    let headers = req.headers();
    if g.loopback && g.token.is_none() {
        let host = headers
            .get(header::HOST)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("");
        if !loopback_host(host) {
            return refuse(
                StatusCode::FORBIDDEN,
                "this endpoint answers only to a loopback address such as http://127.0.0.1/; \
                 to reach it from elsewhere, listen on another address with a token (http.token_file)",
            );
        }
    }
    let path = req.uri().path();
    if cross_site(req.method(), path, headers) {
        return refuse(
            StatusCode::FORBIDDEN,
            "refused: a request from another site (only a link to a page may come from elsewhere); \
             open the pages at this address",
        );
    }
    if path == "/login" || path == "/assets/app.css" {
        return next.run(req).await;
    }
    if !g.authorized(headers) {
        // the HTML pages send a browser to the login form; everything else answers 401
        let page = req.method() == Method::GET && is_page(path);
        if page {
            return (StatusCode::SEE_OTHER, [(header::LOCATION, "/login")]).into_response();
        }
        return refuse(
            StatusCode::UNAUTHORIZED,
            "unauthorized: send `Authorization: Bearer <token>` with the token of http.token_file",
        );
    }
    next.run(req).await
}

/// `/login`: a form for the token (GET) and the cookie that carries it (POST).
pub fn routes(g: Arc<Guard>) -> axum::Router {
    axum::Router::new()
        .route("/login", axum::routing::get(login_page).post(login))
        .with_state(g)
}

async fn login_page(State(g): State<Arc<Guard>>) -> Response {
    if !g.needs_token() {
        return (StatusCode::SEE_OTHER, [(header::LOCATION, "/")]).into_response();
    }
    super::pages::login(false)
}

async fn login(State(g): State<Arc<Guard>>, body: axum::body::Bytes) -> Response {
    let given = url::form_urlencoded::parse(&body)
        .find(|(k, _)| k == "token")
        .map(|(_, v)| v.into_owned())
        .unwrap_or_default();
    if !g.check_login(&given) {
        let line = g
            .refused
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .refused(std::time::Instant::now());
        if let Some(line) = line {
            tracing::warn!("{line}");
        }
        return super::pages::login(true);
    }
    let cookie = format!(
        "{COOKIE}={}; HttpOnly; SameSite=Strict; Path=/{}",
        given.trim(),
        if g.tls { "; Secure" } else { "" }
    );
    (
        StatusCode::SEE_OTHER,
        [
            (header::LOCATION, "/".to_string()),
            (header::SET_COOKIE, cookie),
        ],
    )
        .into_response()
}

#[cfg(test)]
mod tests {

    #[test]
    fn only_links_to_pages_may_come_from_another_site() {
        let (get, post) = (Method::GET, Method::POST);
        let cross = |mode: &'static str, dest: &'static str| {
            headers(&[
                ("sec-fetch-site", "cross-site"),
                ("sec-fetch-mode", mode),
                ("sec-fetch-dest", dest),
            ])
        };
        // scripts, Prometheus, curl: no Sec-Fetch-*, no Origin
        assert!(!cross_site(&get, "/api/status", &headers(&[])));
        assert!(!cross_site(&get, "/metrics", &headers(&[])));
        // this site's own pages and their fetches
        let own = headers(&[
            ("sec-fetch-site", "same-origin"),
            ("sec-fetch-mode", "cors"),
        ]);
        assert!(!cross_site(&get, "/api/lab", &own));
        // a link from elsewhere opens a page, and nothing else
        assert!(!cross_site(
            &get,
            "/lab/yard",
            &cross("navigate", "document")
        ));
        assert!(!cross_site(&get, "/", &cross("navigate", "document")));
        assert!(cross_site(
            &get,
            "/api/status",
            &cross("navigate", "document")
        ));
        assert!(cross_site(&get, "/api/lab", &cross("cors", "empty")));
        assert!(cross_site(
            &get,
            "/history/thumb/1.jpg",
            &cross("no-cors", "image")
        ));
        assert!(cross_site(&get, "/", &cross("navigate", "iframe")));
        assert!(cross_site(
            &post,
            "/api/lab/mark",
            &cross("navigate", "document")
        ));
        // another origin of the same site (another port on 127.0.0.1) is another origin
        let same_site = headers(&[("sec-fetch-site", "same-site"), ("sec-fetch-mode", "cors")]);
        assert!(cross_site(&get, "/api/search", &same_site));
        // an Origin that is not this host, from a browser that sends no Sec-Fetch-*
        let foreign = headers(&[
            ("origin", "http://evil.example"),
            ("host", "127.0.0.1:9464"),
        ]);
        assert!(cross_site(&get, "/api/status", &foreign));
        let mine = headers(&[
            ("origin", "http://127.0.0.1:9464"),
            ("host", "127.0.0.1:9464"),
        ]);
        assert!(!cross_site(&get, "/api/status", &mine));
    }

    #[test]
    fn refused_logins_are_logged_at_most_once_a_minute_with_a_count() {
        let t0 = std::time::Instant::now();
        let at = |s: u64| t0 + std::time::Duration::from_secs(s);
        let mut r = Refusals::default();
        assert!(r.refused(at(0)).is_some_and(|l| l.contains("a login")));
        for s in 1..60 {
            assert_eq!(r.refused(at(s)), None, "second {s}");
        }
        let line = r.refused(at(60)).unwrap();
        assert!(line.contains("60 logins"), "{line}");
        assert_eq!(r.refused(at(61)), None);
        assert!(r.refused(at(200)).is_some_and(|l| l.contains("2 logins")));
    }

    #[test]
    fn tokens_compare_equal_only_when_equal() {
        assert!(constant_time_eq(b"0123456789abcdef", b"0123456789abcdef"));
        assert!(!constant_time_eq(b"0123456789abcdef", b"0123456789abcdeg"));
        assert!(!constant_time_eq(b"0123456789abcdef", b"0123456789abcde"));
        assert!(!constant_time_eq(b"", b"x"));
    }
    use super::*;
    use axum::http::HeaderValue;

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(*k, HeaderValue::from_str(v).unwrap());
        }
        h
    }

    #[test]
    fn tokens_from_bearer_or_cookie() {
        let g = Guard::new(
            Some(Secret::new("s3cret-token-0123456789")),
            "0.0.0.0:9464".parse().unwrap(),
            false,
        );
        assert!(!g.authorized(&headers(&[])));
        assert!(g.authorized(&headers(&[(
            "authorization",
            "Bearer s3cret-token-0123456789"
        )])));
        assert!(!g.authorized(&headers(&[(
            "authorization",
            "Bearer s3cret-token-012345678"
        )])));
        assert!(g.authorized(&headers(&[(
            "cookie",
            "a=b; promptcam_token=s3cret-token-0123456789"
        )])));
        assert!(!g.authorized(&headers(&[(
            "cookie",
            "promptcam_token_x=s3cret-token-0123456789"
        )])));
        let open = Guard::new(None, "127.0.0.1:9464".parse().unwrap(), false);
        assert!(open.authorized(&headers(&[])));
    }

    #[test]
    fn loopback_hosts_and_origins() {
        for h in [
            "127.0.0.1:9464",
            "localhost:80",
            "[::1]:9464",
            "127.0.0.2",
            "LOCALHOST",
        ] {
            assert!(loopback_host(h), "{h}");
        }
        for h in ["evil.example:9464", "192.168.1.2:9464", "", "[fe80::1]:80"] {
            assert!(!loopback_host(h), "{h}");
        }
        let ok = headers(&[
            ("host", "127.0.0.1:9464"),
            ("origin", "http://127.0.0.1:9464"),
            ("sec-fetch-site", "same-origin"),
        ]);
        assert!(same_origin(&ok));
        assert!(
            same_origin(&headers(&[("host", "127.0.0.1:9464")])),
            "scripts send no Origin"
        );
        assert!(!same_origin(&headers(&[
            ("host", "127.0.0.1:9464"),
            ("origin", "http://evil.example")
        ])));
        assert!(!same_origin(&headers(&[
            ("host", "127.0.0.1:9464"),
            ("sec-fetch-site", "cross-site")
        ])));
    }
}
