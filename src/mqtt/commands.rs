//! Commands: what arrives on the command topics, checked before anything changes.
//! `<prefix>/<device_id>/<camera>/paused/set` takes exactly `ON` or `OFF`;
//! `<prefix>/<device_id>/<camera>/<prompt>/threshold/set` takes a finite number in 0..=1 (at
//! most 32 bytes, surrounding spaces allowed); `.../<camera>/prompts/add` a run-time prompt
//! (JSON or text), `.../prompts/remove` a prompt id, `.../watch/set` Home Assistant's "Watch
//! for" phrase and `.../<prompt>/stop` its "Stop watching" button. Anything else is rejected
//! with the reason, and changes nothing.

use std::time::SystemTime;

use super::discovery::{Topics, OFF, ON, PRESS};
use crate::status::Status;

/// The longest payload a command may have.
pub const MAX_PAYLOAD: usize = 32;

/// The longest prompt id `prompts/remove` takes.
const MAX_ID: usize = 256;
/// The longest phrase Home Assistant's "Watch for" text entity sends (its `max`).
pub const MAX_WATCH: usize = 255;

/// A command that passed the checks.
#[derive(Clone, Debug, PartialEq)]
pub enum Command {
    Pause {
        camera: String,
        paused: bool,
    },
    Threshold {
        camera: String,
        prompt: String,
        value: f32,
    },
    /// `prompts/add` (JSON, or a prompt's text), checked by `crate::runtime`.
    AddPrompt {
        camera: String,
        payload: Vec<u8>,
    },
    /// Home Assistant's "Watch for": a phrase, added with the camera's watch settings.
    Watch {
        camera: String,
        text: String,
    },
    /// `prompts/remove` with a prompt id, or a prompt's "Stop watching" button.
    RemovePrompt {
        camera: String,
        prompt: String,
    },
}

impl Command {
    /// The camera a run-time prompt command is for (its refusals go to its `prompts/error`).
    pub fn prompts_camera(&self) -> Option<&str> {
        match self {
            Command::AddPrompt { camera, .. }
            | Command::Watch { camera, .. }
            | Command::RemovePrompt { camera, .. } => Some(camera),
            _ => None,
        }
    }
}

/// The camera of a run-time prompt topic (`.../<camera>/prompts/add`, `.../prompts/remove`,
/// `.../watch/set`, `.../<prompt>/stop`), for the `prompts/error` of a refusal.
pub fn prompts_camera<'a>(topics: &Topics, topic: &'a str) -> Option<&'a str> {
    let base = format!("{}/{}/", topics.prefix, topics.device_id);
    let parts: Vec<&str> = topic.strip_prefix(&base)?.split('/').collect();
    match parts.as_slice() {
        [camera, "prompts", "add" | "remove"] | [camera, "watch", "set"] | [camera, _, "stop"] => {
            Some(camera)
        }
        _ => None,
    }
}

fn at_most(payload: &[u8], max: usize) -> Result<&str, String> {
    if payload.len() > max {
        return Err(format!(
            "the payload has {} bytes; at most {max} are accepted",
            payload.len()
        ));
    }
    std::str::from_utf8(payload).map_err(|_| "the payload is not UTF-8 text".to_string())
}

/// Checks a message on a command topic; `Err` says why it was rejected (for the log). A
/// retained message is refused on the run-time prompt topics: it would act again at every
/// connect.
pub fn parse(
    topics: &Topics,
    topic: &str,
    payload: &[u8],
    retained: bool,
) -> Result<Command, String> {
    let base = format!("{}/{}/", topics.prefix, topics.device_id);
    let rest = topic
        .strip_prefix(&base)
        .ok_or_else(|| "not a command topic of this daemon".to_string())?;
    let parts: Vec<&str> = rest.split('/').collect();
    if retained && prompts_camera(topics, topic).is_some() {
        return Err("a retained message would act again at every reconnect; publish it without the retain flag".into());
    }
    match parts.as_slice() {
        [camera, "paused", "set"] => {
            let text = at_most(payload, MAX_PAYLOAD)?;
            let paused = match text {
                ON => true,
                OFF => false,
                _ => return Err(format!("expected exactly `{ON}` or `{OFF}`, got {text:?}")),
            };
            Ok(Command::Pause {
                camera: camera.to_string(),
                paused,
            })
        }
        [camera, prompt, "threshold", "set"] => {
            let text = at_most(payload, MAX_PAYLOAD)?;
            let value: f32 = text
                .trim()
                .parse()
                .map_err(|_| format!("expected a number in 0..=1, got {text:?}"))?;
            if !value.is_finite() || !(0.0..=1.0).contains(&value) {
                return Err(format!("{text:?} is out of range; a threshold is in 0..=1"));
            }
            Ok(Command::Threshold {
                camera: camera.to_string(),
                prompt: prompt.to_string(),
                value,
            })
        }
        // the size and shape of a prompt are checked with the camera's settings, by the runtime
        [camera, "prompts", "add"] => Ok(Command::AddPrompt {
            camera: camera.to_string(),
            payload: payload.to_vec(),
        }),
        [camera, "prompts", "remove"] => {
            let id = at_most(payload, MAX_ID)?.trim();
            if id.is_empty() {
                return Err("the payload is empty; send the id of the prompt to remove".into());
            }
            Ok(Command::RemovePrompt {
                camera: camera.to_string(),
                prompt: id.to_string(),
            })
        }
        [camera, "watch", "set"] => {
            let text = at_most(payload, MAX_WATCH * 4)?.trim();
            if text.is_empty() {
                return Err("nothing to watch for: type a phrase such as \"a ladder\"".into());
            }
            Ok(Command::Watch {
                camera: camera.to_string(),
                text: text.to_string(),
            })
        }
        [camera, prompt, "stop"] => {
            let text = at_most(payload, MAX_PAYLOAD)?;
            if text != PRESS {
                return Err(format!("expected exactly `{PRESS}`, got {text:?}"));
            }
            Ok(Command::RemovePrompt {
                camera: camera.to_string(),
                prompt: prompt.to_string(),
            })
        }
        _ => Err("not a command topic of this daemon".into()),
    }
}

/// Applies a checked command to the live status: a pause at once, a threshold as a request the
/// inference thread applies between frames, a run-time prompt through the runtime (the
/// inference thread loads it). `Err` says why nothing changed.
pub fn apply(status: &Status, command: &Command, now: SystemTime) -> Result<(), String> {
    match command {
        Command::Pause { camera, paused } => {
            let cam = status
                .camera(camera)
                .ok_or_else(|| format!("there is no camera {camera:?}"))?;
            cam.set_paused(*paused);
            Ok(())
        }
        Command::Threshold {
            camera,
            prompt,
            value,
        } => {
            let cam = status
                .camera(camera)
                .ok_or_else(|| format!("there is no camera {camera:?}"))?;
            if cam.request_threshold(prompt, *value) {
                Ok(())
            } else {
                Err(format!("camera {camera:?} has no prompt {prompt:?}"))
            }
        }
        Command::AddPrompt { camera, payload } => status
            .runtime
            .add(camera, payload, "mqtt", now)
            .map(|id| tracing::info!("camera {camera}: run-time prompt {id} added over MQTT")),
        Command::Watch { camera, text } => {
            let payload = serde_json::json!({ "text": text }).to_string();
            status
                .runtime
                .add(camera, payload.as_bytes(), "home assistant", now)
                .map(|id| {
                    tracing::info!(
                        "camera {camera}: watching for {text:?} ({id}), asked by Home Assistant"
                    )
                })
        }
        Command::RemovePrompt { camera, prompt } => status
            .runtime
            .remove(camera, prompt, crate::runtime::REMOVED)
            .map(|()| tracing::info!("camera {camera}: run-time prompt {prompt} removed")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(t: &Topics, topic: &str, payload: &[u8]) -> Result<Command, String> {
        super::parse(t, topic, payload, false)
    }

    #[test]
    fn run_time_prompt_commands_are_checked_and_never_retained() {
        let t = topics();
        assert_eq!(
            parse(&t, "promptcam/pi/porch/prompts/remove", b" a_ladder\n"),
            Ok(Command::RemovePrompt {
                camera: "porch".into(),
                prompt: "a_ladder".into()
            })
        );
        assert_eq!(
            parse(&t, "promptcam/pi/porch/a_ladder/stop", b"PRESS"),
            Ok(Command::RemovePrompt {
                camera: "porch".into(),
                prompt: "a_ladder".into()
            })
        );
        assert_eq!(
            parse(&t, "promptcam/pi/porch/watch/set", b"a ladder"),
            Ok(Command::Watch {
                camera: "porch".into(),
                text: "a ladder".into()
            })
        );
        for (topic, payload) in [
            ("promptcam/pi/porch/prompts/remove", &b""[..]),
            ("promptcam/pi/porch/watch/set", b"  "),
            ("promptcam/pi/porch/a_ladder/stop", b"press"),
        ] {
            assert!(parse(&t, topic, payload).is_err(), "{topic} {payload:?}");
        }
        let e = super::parse(&t, "promptcam/pi/porch/prompts/add", b"a van", true).unwrap_err();
        assert!(e.contains("retain"), "{e}");
        assert_eq!(
            prompts_camera(&t, "promptcam/pi/porch/prompts/add"),
            Some("porch")
        );
        assert_eq!(prompts_camera(&t, "promptcam/pi/porch/paused/set"), None);
    }

    fn topics() -> Topics {
        Topics {
            prefix: "promptcam".into(),
            device_id: "pi".into(),
            discovery_prefix: "homeassistant".into(),
        }
    }

    #[test]
    fn accepts_exact_switch_payloads_and_thresholds_in_range() {
        let t = topics();
        assert_eq!(
            parse(&t, "promptcam/pi/porch/paused/set", b"ON"),
            Ok(Command::Pause {
                camera: "porch".into(),
                paused: true
            })
        );
        assert_eq!(
            parse(&t, "promptcam/pi/porch/paused/set", b"OFF"),
            Ok(Command::Pause {
                camera: "porch".into(),
                paused: false
            })
        );
        let ok = parse(&t, "promptcam/pi/porch/person/threshold/set", b" 0.35\n");
        assert_eq!(
            ok,
            Ok(Command::Threshold {
                camera: "porch".into(),
                prompt: "person".into(),
                value: 0.35
            })
        );
        assert!(parse(&t, "promptcam/pi/porch/person/threshold/set", b"0").is_ok());
        assert!(parse(&t, "promptcam/pi/porch/person/threshold/set", b"1").is_ok());
    }

    #[test]
    fn rejects_malformed_and_out_of_range_payloads() {
        let t = topics();
        for p in [&b"on"[..], b"ON ", b"1", b"", b"TRUE", b"\xff\xfe"] {
            assert!(
                parse(&t, "promptcam/pi/porch/paused/set", p).is_err(),
                "{p:?}"
            );
        }
        for p in [
            &b"1.01"[..],
            b"-0.1",
            b"NaN",
            b"inf",
            b"1e40",
            b"0.5x",
            b"",
            b"0,5",
        ] {
            assert!(
                parse(&t, "promptcam/pi/porch/person/threshold/set", p).is_err(),
                "{p:?}"
            );
        }
        let long = format!("0.{}", "1".repeat(40));
        let e = parse(
            &t,
            "promptcam/pi/porch/person/threshold/set",
            long.as_bytes(),
        )
        .unwrap_err();
        assert!(e.contains("at most 32"), "{e}");
        assert!(parse(&t, "promptcam/other/porch/paused/set", b"ON").is_err());
        assert!(parse(&t, "promptcam/pi/porch/person/state/set", b"ON").is_err());
    }
}
