//! HTTP and history: the `[http]` table (the local endpoint: address, limits, the token that
//! guards it) and the `[history]` table (where and how long frames and scores are kept).

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Result;

use super::raw::{RawHistory, RawHttp};
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
        let idle_timeout = Duration::from_secs_f64(self.float(
            &h.idle_timeout,
            "http.idle_timeout",
            10.0,
            0.5,
            3600.0,
        )?);
        let max_connections =
            self.int(&h.max_connections, "http.max_connections", 64, 1, 65536)? as usize;
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
            idle_timeout,
            max_connections,
        }))
    }

    /// `[history]`: on by default when `[http]` is; its directory defaults to `history` in
    /// systemd's state directory (`$STATE_DIRECTORY`), else next to the config file.
    pub(super) fn history(
        &self,
        h: &RawHistory,
        http_on: bool,
    ) -> Result<Option<crate::history::HistoryConfig>> {
        let dir = match &h.path {
            Some(p) if p.get_ref().trim().is_empty() => {
                return self.err(
                    p.span(),
                    "history.path",
                    "a history path needs a directory name",
                )
            }
            Some(p) => {
                let p = PathBuf::from(p.get_ref());
                if p.is_absolute() {
                    p
                } else {
                    self.path.parent().map(|d| d.join(&p)).unwrap_or(p)
                }
            }
            None => match std::env::var_os("STATE_DIRECTORY").filter(|s| !s.is_empty()) {
                // systemd may list several state directories, separated by colons
                Some(s) => PathBuf::from(s.to_string_lossy().split(':').next().unwrap_or_default())
                    .join("history"),
                None => self
                    .path
                    .parent()
                    .map(|d| d.join("history"))
                    .unwrap_or_else(|| PathBuf::from("history")),
            },
        };
        let config = crate::history::HistoryConfig {
            dir,
            keep: Duration::from_secs_f64(
                self.float(&h.keep_days, "history.keep_days", 7.0, 0.01, 3650.0)? * 86400.0,
            ),
            max_bytes: self.int(&h.max_mb, "history.max_mb", 1024, 16, 1 << 20)? as u64
                * 1024
                * 1024,
            thumbnail_width: self.int(
                &h.thumbnail_width,
                "history.thumbnail_width",
                320,
                32,
                1920,
            )? as u32,
            thumbnail_interval: Duration::from_secs_f64(self.float(
                &h.thumbnail_interval,
                "history.thumbnail_interval",
                5.0,
                0.0,
                3600.0,
            )?),
        };
        Ok(h.enabled.unwrap_or(http_on).then_some(config))
    }
}
