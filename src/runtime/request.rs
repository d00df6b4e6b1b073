//! Request: what a `prompts/add` message (or the lab's "Add to this camera", or Home
//! Assistant's "Watch for") asks for, checked before anything changes — a JSON object with the
//! keys of `[[cameras.prompts]]` plus `expires` (a duration such as "2h", or an RFC 3339 time)
//! and `once`; a payload that is not JSON is the text of a prompt. Pure: time is an argument.

use std::time::{Duration, SystemTime};

use serde_json::{Map, Value};

use crate::config::WatchConfig;

/// The largest `prompts/add` payload, in bytes.
pub const MAX_PAYLOAD: usize = 16 * 1024;
/// How far ahead `expires` may reach.
pub const MAX_EXPIRES: Duration = Duration::from_secs(366 * 86400);

/// A checked request: the prompt's keys (for the config validator) and the run-time settings.
#[derive(Clone, Debug, PartialEq)]
pub struct Request {
    pub keys: Map<String, Value>,
    pub expires: Option<SystemTime>,
    pub once: bool,
}

/// Parses a payload; a prompt without `model` (and not `learned`) takes the camera's `watch`
/// settings (model, negatives, threshold), as a phrase typed into Home Assistant does.
pub fn parse(payload: &[u8], watch: &WatchConfig, now: SystemTime) -> Result<Request, String> {
    if payload.len() > MAX_PAYLOAD {
        return Err(format!(
            "the payload has {} bytes; a prompt takes at most {MAX_PAYLOAD}",
            payload.len()
        ));
    }
    let text = std::str::from_utf8(payload).map_err(|_| "the payload is not UTF-8 text")?;
    let trimmed = text.trim();
    if trimmed.is_empty() {
        return Err("the payload is empty; send a prompt's text or a JSON object such as {\"text\": \"a ladder\"}".into());
    }
    let mut keys = if trimmed.starts_with('{') {
        match serde_json::from_str::<Value>(trimmed) {
            Ok(Value::Object(m)) => m,
            Ok(_) => unreachable!("a JSON text that starts with {{ is an object"),
            Err(e) => return Err(format!("the payload is not valid JSON: {e}")),
        }
    } else {
        Map::from_iter([("text".to_string(), Value::String(trimmed.to_string()))])
    };
    let expires = match keys.remove("expires") {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) => Some(expires_at(&s, now)?),
        Some(v) => {
            return Err(format!(
                "`expires` is {v}; give a duration such as \"2h\" or an RFC 3339 time"
            ))
        }
    };
    let once = match keys.remove("once") {
        None | Some(Value::Null) => false,
        Some(Value::Bool(b)) => b,
        Some(v) => return Err(format!("`once` is {v}; use true or false")),
    };
    if !keys.contains_key("model") && !keys.contains_key("learned") {
        keys.insert("model".into(), Value::String(watch.model.name().into()));
        let text_prompt = !keys.contains_key("tree") && !keys.contains_key("examples");
        if text_prompt
            && watch.model.scores_against_negatives()
            && !keys.contains_key("negatives")
            && !watch.negatives.is_empty()
        {
            keys.insert("negatives".into(), watch.negatives.clone().into());
        }
        if let (Some(t), false) = (watch.threshold, keys.contains_key("threshold")) {
            keys.insert("threshold".into(), Value::from(t as f64));
        }
    }
    Ok(Request {
        keys,
        expires,
        once,
    })
}

/// `expires`: a duration from now ("90m", "2h 30m") or a time (RFC 3339), in the future and at
/// most a year ahead.
pub fn expires_at(s: &str, now: SystemTime) -> Result<SystemTime, String> {
    let s = s.trim();
    let at = match humantime::parse_duration(s) {
        Ok(d) => now + d,
        Err(_) => s
            .parse::<jiff::Timestamp>()
            .map(SystemTime::from)
            .map_err(|_| {
                format!("`expires` is {s:?}; give a duration such as \"2h\" or \"90m\", or an RFC 3339 time with its offset, such as \"2027-03-01T07:00:00+01:00\"")
            })?,
    };
    if at <= now {
        return Err(format!("`expires` {s:?} is not in the future"));
    }
    if at.duration_since(now).unwrap_or_default() > MAX_EXPIRES {
        return Err(format!("`expires` {s:?} is more than a year ahead"));
    }
    Ok(at)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::ModelKind;

    fn watch() -> WatchConfig {
        WatchConfig {
            model: ModelKind::Clip,
            negatives: vec!["an empty driveway".into()],
            threshold: Some(0.4),
            max_prompts: 8,
        }
    }

    #[test]
    fn a_phrase_takes_the_cameras_watch_settings() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000);
        let r = parse(b"  a ladder\n", &watch(), now).unwrap();
        assert_eq!(r.keys["text"], "a ladder");
        assert_eq!(r.keys["model"], "clip");
        assert_eq!(
            r.keys["negatives"],
            serde_json::json!(["an empty driveway"])
        );
        assert!((r.keys["threshold"].as_f64().unwrap() - 0.4).abs() < 1e-6);
        assert_eq!((r.expires, r.once), (None, false));
        // a JSON prompt with its own model keeps its keys
        let r = parse(
            br#"{"text": "a package", "model": "owlvit", "expires": "2h", "once": true}"#,
            &watch(),
            now,
        )
        .unwrap();
        assert_eq!(r.keys.len(), 2, "{:?}", r.keys);
        assert_eq!(r.expires, Some(now + Duration::from_secs(7200)));
        assert!(r.once);
        let r = parse(
            br#"{"text": "a van", "expires": "2027-03-01T07:00:00Z"}"#,
            &watch(),
            now,
        )
        .unwrap();
        assert_eq!(
            r.expires,
            humantime::parse_rfc3339("2027-03-01T07:00:00Z").ok()
        );
    }

    #[test]
    fn bad_requests_say_what_is_wrong() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000);
        let cases: [(&[u8], &str); 8] = [
            (b"", "empty"),
            (b"{\"text\": ", "not valid JSON"),
            (b"\xff\xfe", "UTF-8"),
            (br#"{"text": "x", "expires": 5}"#, "duration"),
            (br#"{"text": "x", "expires": "soon"}"#, "RFC 3339"),
            (
                br#"{"text": "x", "expires": "2020-01-01T00:00:00Z"}"#,
                "not in the future",
            ),
            (br#"{"text": "x", "expires": "900d"}"#, "a year"),
            (br#"{"text": "x", "once": "yes"}"#, "true or false"),
        ];
        for (payload, why) in cases {
            let e = parse(payload, &watch(), now).unwrap_err();
            assert!(e.contains(why), "{payload:?}: {e}");
        }
        let big = format!("{{\"text\": \"{}\"}}", "a".repeat(70_000));
        let e = parse(big.as_bytes(), &watch(), now).unwrap_err();
        assert!(e.contains("at most 16384"), "{e}");
    }
}
