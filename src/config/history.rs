//! History: the `[history]` table — where the frames, scores and events the web pages read are
//! kept, and for how long.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Result;

use super::raw::RawHistory;
use super::validate::Validator;

/// The validated `[history]` table.
#[derive(Clone, Debug)]
pub struct HistoryConfig {
    /// The directory holding `history.sqlite` (and any corrupt file set aside).
    pub dir: PathBuf,
    /// Rows older than this are deleted (`keep_days`, default 7).
    pub keep: Duration,
    /// The oldest rows are deleted while the database is bigger than this (`max_mb`, default 1024).
    pub max_bytes: u64,
    /// Writing pauses while the history's file system has less than this free (`min_free_mb`,
    /// default 256; 0: never), so that the history never takes the last space of the disk it
    /// shares with the MQTT spool and the system.
    pub min_free_bytes: u64,
    /// Thumbnail width in pixels (default 320).
    pub thumbnail_width: u32,
    /// At most one thumbnail per camera this often, plus one on every event (default 5 s).
    pub thumbnail_interval: Duration,
}

impl HistoryConfig {
    /// The database file's name inside [`HistoryConfig::dir`].
    pub const FILE_NAME: &'static str = "history.sqlite";

    /// The database file inside [`HistoryConfig::dir`].
    pub fn db_path(&self) -> PathBuf {
        self.dir.join(HistoryConfig::FILE_NAME)
    }

    /// The state directory the history's directory lies in, which also holds the lab's example
    /// pictures (`examples/`), learned prompts (`learned/`) and the model hash cache; absolute.
    pub fn state_dir(&self) -> PathBuf {
        let state = self.dir.parent().unwrap_or(&self.dir);
        std::path::absolute(state).unwrap_or_else(|_| state.to_path_buf())
    }
}

impl Validator<'_> {
    /// `[history]`: on by default when `[http]` is; its directory defaults to `history` in
    /// systemd's state directory (`$STATE_DIRECTORY`), else next to the config file.
    pub(super) fn history(&self, h: &RawHistory, http_on: bool) -> Result<Option<HistoryConfig>> {
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
            None => match super::systemd_state_dir(std::env::var_os("STATE_DIRECTORY")) {
                Some(s) => s.join("history"),
                None => self
                    .path
                    .parent()
                    .map(|d| d.join("history"))
                    .unwrap_or_else(|| PathBuf::from("history")),
            },
        };
        let config = HistoryConfig {
            dir,
            keep: Duration::from_secs_f64(
                self.float(&h.keep_days, "history.keep_days", 7.0, 0.01, 3650.0)? * 86400.0,
            ),
            max_bytes: self.int(&h.max_mb, "history.max_mb", 1024, 16, 1 << 20)? as u64
                * 1024
                * 1024,
            min_free_bytes: self.int(&h.min_free_mb, "history.min_free_mb", 256, 0, 1 << 20)?
                as u64
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
