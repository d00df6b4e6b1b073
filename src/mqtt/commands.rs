//! Commands: what arrives on the `.../set` topics (Home Assistant's `switch` and `number`), checked
//! before anything changes. `<prefix>/<device_id>/<camera>/paused/set` takes exactly `ON` or
//! `OFF`; `<prefix>/<device_id>/<camera>/<prompt>/threshold/set` takes a finite number in 0..=1
//! (at most 32 bytes, surrounding spaces allowed). Anything else is rejected with the reason,
//! and changes nothing.

use super::discovery::{Topics, OFF, ON};
use crate::status::Status;

/// The longest payload a command may have.
pub const MAX_PAYLOAD: usize = 32;

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
}

/// Checks a message on a command topic; `Err` says why it was rejected (for the log).
pub fn parse(topics: &Topics, topic: &str, payload: &[u8]) -> Result<Command, String> {
    let base = format!("{}/{}/", topics.prefix, topics.device_id);
    let rest = topic
        .strip_prefix(&base)
        .ok_or_else(|| "not a command topic of this daemon".to_string())?;
    let parts: Vec<&str> = rest.split('/').collect();
    if payload.len() > MAX_PAYLOAD {
        return Err(format!(
            "the payload has {} bytes; at most {MAX_PAYLOAD} are accepted",
            payload.len()
        ));
    }
    let text =
        std::str::from_utf8(payload).map_err(|_| "the payload is not UTF-8 text".to_string())?;
    match parts.as_slice() {
        [camera, "paused", "set"] => {
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
        _ => Err("not a command topic of this daemon".into()),
    }
}

/// Applies a checked command to the live status: a pause at once, a threshold as a request the
/// inference thread applies between frames. `Err` when the camera or prompt does not exist.
pub fn apply(status: &Status, command: &Command) -> Result<(), String> {
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
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
