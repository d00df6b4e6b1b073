//! Unit tests of the Home Assistant discovery messages.

use super::*;

const CONFIG: &str = r#"
[models.clip]
dir = "models/tiny/clip"

[models.clipseg]
dir = "models/tiny/clipseg"

[[cameras]]
name = "Yard"
source = "tests/fixtures/images"

[[cameras.prompts]]
text = "a person"
model = "clip"
negatives = ["an empty yard"]

[[cameras.prompts]]
text = "snow"
model = "clipseg"
"#;

fn score_sensor(msgs: &[Message], prompt: &str) -> serde_json::Value {
    let topic = format!("homeassistant/sensor/t_yard_{prompt}_score/config");
    let m = msgs
        .iter()
        .find(|m| m.topic == topic)
        .unwrap_or_else(|| panic!("no {topic}"));
    serde_json::from_str(&m.payload).expect("a JSON payload")
}

#[test]
fn a_clipseg_score_shows_percent_and_a_clip_score_a_fraction() {
    let cameras = crate::config::parse(CONFIG, std::path::Path::new("t.toml"))
        .expect("a valid config")
        .cameras;
    let topics = Topics {
        prefix: "promptcam".into(),
        device_id: "t".into(),
        discovery_prefix: "homeassistant".into(),
    };
    let msgs = messages(&topics, &cameras).expect("serializable payloads");
    let seg = score_sensor(&msgs, "snow");
    assert_eq!(seg["unit_of_measurement"], "%", "{seg}");
    assert_eq!(
        seg["value_template"], "{{ (value | float * 100) | round(1) }}",
        "{seg}"
    );
    assert_eq!(seg["state_topic"], "promptcam/t/yard/snow/score");
    let clip = score_sensor(&msgs, "a_person");
    assert!(
        clip.get("unit_of_measurement").is_none() && clip.get("value_template").is_none(),
        "{clip}"
    );
    assert_eq!(clip["suggested_display_precision"], 2);
}
