//! Load: what a previous run left in the spool directory, checked before anything is replayed.
//! An entry is a file named by exactly 20 digits plus `.json` holding one event object (`type`
//! start/update/end, `camera`, `prompt`, `id`, `started_at`, a numeric `score`) of at most
//! [`super::MAX_ENTRY`] bytes. Anything else named `*.json` is moved to `rejected/` with a
//! warning saying why (kept for a look, never resent); interrupted writes (`*.tmp`) are removed.
//! Sequence numbers close to `u64::MAX` are renumbered from 1, in order, so that new events
//! always sort after the old ones.

use std::fs;
use std::path::Path;

use anyhow::{Context, Result};

use super::{name, MAX_ENTRY, OPEN_RECORD, REJECTED, SUFFIX};

/// Above this, loaded entries are renumbered from 1 (leaving room for new ones).
const RENUMBER_ABOVE: u64 = u64::MAX / 2;

/// Checks that a payload is one well-formed event object; `Err` says what is wrong.
pub fn check_event(payload: &str) -> Result<(), String> {
    let v: serde_json::Value =
        serde_json::from_str(payload).map_err(|e| format!("not JSON ({e})"))?;
    let Some(o) = v.as_object() else {
        return Err("not a JSON object".into());
    };
    match o.get("type").and_then(|t| t.as_str()) {
        Some("start" | "update" | "end") => {}
        _ => return Err("`type` is not start, update or end".into()),
    }
    for key in ["camera", "prompt", "id", "started_at"] {
        if o.get(key)
            .and_then(|v| v.as_str())
            .is_none_or(str::is_empty)
        {
            return Err(format!("`{key}` is missing or not a non-empty string"));
        }
    }
    if !o.get("score").is_some_and(|s| s.is_number()) {
        return Err("`score` is missing or not a number".into());
    }
    Ok(())
}

/// The sequence number in an entry's file name: exactly 20 digits and `.json`.
fn seq_of(file_name: &str) -> Option<u64> {
    let digits = file_name.strip_suffix(SUFFIX)?;
    if digits.len() != 20 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

/// Moves a file to `rejected/` with a warning (it stays where it is if that fails: it is still
/// never sent).
pub(super) fn set_aside(dir: &Path, path: &Path, why: &str) {
    let rejected = dir.join(REJECTED);
    let to = rejected.join(path.file_name().unwrap_or_default());
    match fs::create_dir_all(&rejected).and_then(|()| fs::rename(path, &to)) {
        Ok(()) => tracing::warn!(
            "MQTT spool: {} is not a valid spooled event ({why}): moved to {}, not sent",
            path.display(),
            to.display()
        ),
        Err(e) => tracing::warn!(
            "MQTT spool: {} is not a valid spooled event ({why}) and could not be moved to {}: {e}; it is not sent; remove it",
            path.display(),
            rejected.display()
        ),
    }
}

fn read(path: &Path) -> Result<String, String> {
    let size = fs::metadata(path).map_err(|e| e.to_string())?.len();
    if size > MAX_ENTRY as u64 {
        return Err(format!(
            "{size} bytes, more than the {MAX_ENTRY} an event can have"
        ));
    }
    let bytes = fs::read(path).map_err(|e| e.to_string())?;
    let text = String::from_utf8(bytes).map_err(|_| "not UTF-8 text".to_string())?;
    check_event(&text)?;
    Ok(text)
}

/// Creates the directory if needed and returns the valid entries it holds, in order.
pub(super) fn load(dir: &Path) -> Result<Vec<(u64, String)>> {
    fs::create_dir_all(dir).with_context(|| {
        format!("unable to create the MQTT spool directory {}; create it writable for the daemon or set mqtt.spool_dir", dir.display())
    })?;
    let listing = fs::read_dir(dir).with_context(|| {
        format!(
            "unable to list the MQTT spool directory {}; check its permissions",
            dir.display()
        )
    })?;
    let mut found = vec![];
    for e in listing.flatten() {
        let file_name = e.file_name().to_string_lossy().into_owned();
        if !e.file_type().is_ok_and(|t| t.is_file()) || file_name == OPEN_RECORD {
            continue;
        }
        if file_name.ends_with(".tmp") {
            // a write interrupted by a crash: never renamed, so never acknowledged to anyone
            let _ = fs::remove_file(e.path());
        } else if let Some(seq) = seq_of(&file_name) {
            found.push((seq, e.path()));
        } else if file_name.ends_with(SUFFIX) {
            set_aside(dir, &e.path(), "its name is not a 20-digit sequence number");
        }
    }
    found.sort();
    let mut entries = vec![];
    for (seq, path) in found {
        match read(&path) {
            Ok(payload) => entries.push((seq, payload)),
            Err(why) => set_aside(dir, &path, &why),
        }
    }
    if entries.last().is_some_and(|(seq, _)| *seq > RENUMBER_ABOVE) {
        renumber(dir, &mut entries)?;
    }
    Ok(entries)
}

/// Renames the entries to 1, 2, ... in order. Each new number is at most the old one and above
/// every number already given, so no rename overwrites a file still to be renamed, and a crash
/// half-way leaves a spool in the same order.
fn renumber(dir: &Path, entries: &mut [(u64, String)]) -> Result<()> {
    for (i, (seq, _)) in entries.iter_mut().enumerate() {
        let new = i as u64 + 1;
        if *seq != new {
            fs::rename(dir.join(name(*seq)), dir.join(name(new))).with_context(|| {
                format!(
                    "unable to renumber the MQTT spool {}; check its permissions",
                    dir.display()
                )
            })?;
            *seq = new;
        }
    }
    tracing::info!(
        "MQTT spool {}: sequence numbers were close to their limit: renumbered {} event(s) from 1",
        dir.display(),
        entries.len()
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const EVENT: &str =
        r#"{"type":"end","camera":"c","prompt":"p","score":0.2,"started_at":"t","id":"e"}"#;

    #[test]
    fn only_event_objects_pass() {
        assert_eq!(check_event(EVENT), Ok(()));
        for bad in [
            "[]",
            "{}",
            "7",
            "null",
            "{",
            r#"{"type":"begin","camera":"c","prompt":"p","score":1,"started_at":"t","id":"e"}"#,
            r#"{"type":"start","camera":"c","prompt":"p","score":"1","started_at":"t","id":"e"}"#,
            r#"{"type":"start","camera":"c","prompt":"p","score":1,"started_at":"t","id":""}"#,
            r#"{"type":"start","camera":3,"prompt":"p","score":1,"started_at":"t","id":"e"}"#,
        ] {
            assert!(check_event(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn names_are_exactly_twenty_digits() {
        assert_eq!(seq_of("00000000000000000007.json"), Some(7));
        assert_eq!(seq_of("18446744073709551615.json"), Some(u64::MAX));
        for bad in [
            "7.json",
            "0000000000000000007.json",
            "99999999999999999999.json",
            "+0000000000000000007.json",
            "00000000000000000007.json.bak",
            "0000000000000000000a.json",
        ] {
            assert_eq!(seq_of(bad), None, "{bad}");
        }
    }

    #[test]
    fn hostile_files_are_set_aside_and_high_numbers_renumbered() {
        let dir = std::env::temp_dir().join(format!("promptcam-spool-load-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).unwrap();
        let w = |n: &str, body: &str| fs::write(dir.join(n), body).unwrap();
        w("00000000000000000003.json", EVENT);
        w("18446744073709551615.json", EVENT);
        w("7.json", EVENT);
        w("00000000000000000004.json", "[]");
        w("00000000000000000005.json", &" ".repeat(MAX_ENTRY + 1));
        w(OPEN_RECORD, "{}");
        w("notes.txt", "kept");
        let got = load(&dir).unwrap();
        assert_eq!(
            got.iter().map(|(s, _)| *s).collect::<Vec<_>>(),
            vec![1, 2],
            "renumbered in order"
        );
        assert!(dir.join("00000000000000000001.json").exists());
        assert!(dir.join("00000000000000000002.json").exists());
        let mut rejected: Vec<String> = fs::read_dir(dir.join(REJECTED))
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        rejected.sort();
        assert_eq!(
            rejected,
            [
                "00000000000000000004.json",
                "00000000000000000005.json",
                "7.json"
            ]
        );
        assert!(dir.join(OPEN_RECORD).exists() && dir.join("notes.txt").exists());
        assert_eq!(load(&dir).unwrap().len(), 2, "nothing set aside twice");
        let _ = fs::remove_dir_all(&dir);
    }
}
