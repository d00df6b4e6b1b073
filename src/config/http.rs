//! HTTP: the `[http]` table — the local endpoint's address, its limits, and the token that
//! guards it.

use std::time::Duration;

use anyhow::Result;

use super::raw::RawHttp;
use super::validate::Validator;
use super::HttpConfig;

impl Validator<'_> {
    pub(super) fn http(&self, h: &RawHttp) -> Result<Option<HttpConfig>> {
        let listen = match &h.listen {
            None => std::net::SocketAddr::from(([127, 0, 0, 1], 9464)),
            Some(s) => match s.get_ref().parse() {
                Ok(a) => a,
                Err(_) => {
                    return self.err(
                        s.span(),
                        "http.listen",
                        format!(
                            "{:?} is not an address and port; use e.g. \"127.0.0.1:9464\"",
                            s.get_ref()
                        ),
                    )
                }
            },
        };
        let stale_after = Duration::from_secs_f64(self.float(
            &h.stale_after,
            "http.stale_after",
            30.0,
            0.5,
            86400.0,
        )?);
        let token = match &h.token_file {
            None => None,
            Some(f) => {
                let path = self.relative(f.get_ref());
                let text = std::fs::read_to_string(&path).or_else(|e| {
                    self.err(
                        f.span(),
                        "http.token_file",
                        format!(
                            "unable to read {}: {e}; make it readable by the daemon",
                            path.display()
                        ),
                    )
                })?;
                let token = text.trim().to_string();
                if token.len() < 16 || token.chars().any(|c| c.is_whitespace() || c.is_control()) {
                    return self.err(
                        f.span(),
                        "http.token_file",
                        format!(
                            "{} must hold one token of at least 16 characters without spaces; \
                             make one with `head -c 24 /dev/urandom | base64 > {}`",
                            path.display(),
                            path.display()
                        ),
                    );
                }
                Some(super::Secret::new(token))
            }
        };
        // a file the daemon can open, or an error at its key
        let readable = |f: &toml::Spanned<String>, name: &str| -> Result<std::path::PathBuf> {
            let path = self.relative(f.get_ref());
            match std::fs::File::open(&path) {
                Ok(_) => Ok(path),
                Err(e) => self.err(
                    f.span(),
                    name,
                    format!(
                        "unable to read {}: {e}; make it readable by the daemon",
                        path.display()
                    ),
                ),
            }
        };
        let tls = match (&h.tls_cert, &h.tls_key) {
            (None, None) => None,
            (Some(cert), Some(key)) => Some(super::HttpTls {
                cert: readable(cert, "http.tls_cert")?,
                key: readable(key, "http.tls_key")?,
            }),
            (Some(f), None) | (None, Some(f)) => {
                return self.err(
                    f.span(),
                    if h.tls_cert.is_some() { "http.tls_cert" } else { "http.tls_key" },
                    "HTTPS needs both tls_cert (the certificate chain) and tls_key (its private key), PEM files",
                )
            }
        };
        let idle_timeout = Duration::from_secs_f64(self.float(
            &h.idle_timeout,
            "http.idle_timeout",
            10.0,
            0.5,
            3600.0,
        )?);
        let max_connections =
            self.int(&h.max_connections, "http.max_connections", 64, 1, 65536)? as usize;
        let request_timeout = Duration::from_secs_f64(self.float(
            &h.request_timeout,
            "http.request_timeout",
            90.0,
            1.0,
            3600.0,
        )?);
        let lab_queries = self.int(&h.lab_queries, "http.lab_queries", 1, 1, 16)? as usize;
        let enabled = h.enabled.unwrap_or(false);
        if enabled && token.is_none() && !listen.ip().is_loopback() {
            let span = h.listen.as_ref().map(|s| s.span()).unwrap_or(0..0);
            return self.err(
                span,
                "http.listen",
                format!(
                    "{listen} is reachable from the network, so every request needs a token: \
                     set `token_file` in [http] (or listen on 127.0.0.1)"
                ),
            );
        }
        Ok(enabled.then_some(HttpConfig {
            listen,
            stale_after,
            token,
            tls,
            idle_timeout,
            max_connections,
            request_timeout,
            lab_queries,
        }))
    }
}
