//! Unit tests of the run-time prompts: one code path for every source, the config validator's
//! errors, limits, changes, removal reasons, expiry and the files that bring them back.

use super::*;

const CONFIG: &str = r#"
[models.clip]
dir = "models/tiny/clip"

[models.owlvit]
dir = "models/tiny/owlvit"

[[cameras]]
name = "Porch"
source = "tests/fixtures/images"

[cameras.watch]
negatives = ["an empty porch"]
max_prompts = 3

[[cameras.prompts]]
text = "a person"
model = "clip"
negatives = ["an empty porch"]
"#;

fn config(dir: &std::path::Path) -> Config {
    let text = format!(
        "{CONFIG}\n[mqtt]\nhost = \"127.0.0.1\"\nspool_dir = \"{}\"\n",
        dir.join("spool").display()
    );
    crate::config::parse(&text, &dir.join("promptcam.toml")).expect("a valid config")
}

fn temp(tag: &str) -> std::path::PathBuf {
    let d = std::env::temp_dir().join(format!("promptcam-runtime-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn t(s: u64) -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(1_800_000_000 + s)
}

#[test]
fn adds_change_and_remove_through_one_path_and_come_back_after_a_restart() {
    let d = temp("path");
    let cfg = config(&d);
    let rt = Runtime::start(&cfg, t(0));
    assert!(!rt.take_asked());
    let id = rt
        .add("porch", b"a ladder", "home assistant", t(0))
        .unwrap();
    assert_eq!(id, "a_ladder");
    assert!(rt.take_asked(), "a change asks for a reload");
    let e = &rt.list("porch")[0];
    assert_eq!(
        e.prompts[0].negatives,
        vec!["an empty porch".to_string()],
        "the watch defaults"
    );
    assert_eq!(e.prompts[0].model, crate::model::ModelKind::Clip);
    let v0 = rt.version();
    // the same id again is a change: one entry, the old prompt's event ends "changed"
    rt.add(
        "porch",
        br#"{"text": "a ladder", "model": "owlvit", "threshold": 0.2, "expires": "2h", "once": true}"#,
        "mqtt",
        t(10),
    )
    .unwrap();
    assert!(rt.version() > v0);
    let list = rt.list("porch");
    assert_eq!(list.len(), 1);
    assert_eq!(list[0].prompts[0].model, crate::model::ModelKind::OwlVit);
    assert_eq!(rt.take_reason("porch", "a_ladder"), Some(CHANGED));
    assert_eq!(rt.take_reason("porch", "a_ladder"), None, "taken once");
    let mut merged = cfg.clone();
    assert_eq!(rt.merge(&mut merged), 1);
    let p = merged.cameras[0].prompts.last().unwrap();
    assert!(p
        .runtime
        .as_ref()
        .is_some_and(|m| m.once && m.expires() == Some(t(10 + 7200))));
    let listing = rt.listing("porch");
    assert_eq!(listing[0]["id"], "a_ladder");
    assert_eq!(listing[0]["once"], true);
    assert_eq!(listing[0]["expires"], crate::event::rfc3339(t(7210)));

    // a restart brings it back; one expired meanwhile does not come back
    rt.add(
        "porch",
        br#"{"text": "a cat", "expires": "1m"}"#,
        "mqtt",
        t(20),
    )
    .unwrap();
    let again = Runtime::start(&cfg, t(30));
    assert_eq!(again.list("porch").len(), 2);
    let later = Runtime::start(&cfg, t(100));
    let ids: Vec<String> = later
        .list("porch")
        .iter()
        .map(|e| e.meta.id.clone())
        .collect();
    assert_eq!(ids, vec!["a_ladder".to_string()]);

    // expiry while running; removal with its reason
    assert_eq!(later.expire(t(7209)), 0);
    assert_eq!(later.expire(t(7210)), 1);
    assert_eq!(later.take_reason("porch", "a_ladder"), Some(EXPIRED));
    rt.add("porch", b"a van", "lab", t(40)).unwrap();
    rt.remove("porch", "a_van", REMOVED).unwrap();
    assert_eq!(rt.take_reason("porch", "a_van"), Some(REMOVED));
    let _ = std::fs::remove_dir_all(&d);
}

#[test]
fn bad_prompts_are_refused_with_the_validators_reason_and_change_nothing() {
    let d = temp("bad");
    let cfg = config(&d);
    let rt = Runtime::start(&cfg, t(0));
    rt.add("porch", b"a ladder", "mqtt", t(0)).unwrap();
    let _ = rt.take_asked();
    let (before, version) = (rt.listing("porch"), rt.version());
    let long = format!("{{\"text\": \"{}\"}}", "a".repeat(600));
    let cases: Vec<(&str, Vec<u8>, &str)> = vec![
        (
            "porch",
            br#"{"text": "x", "model": "yolo"}"#.to_vec(),
            "is not a model",
        ),
        (
            "porch",
            br#"{"text": "x", "model": "clipseg"}"#.to_vec(),
            "[models.clipseg]",
        ),
        (
            "porch",
            br#"{"text": "x", "threshold": 1.5}"#.to_vec(),
            "cameras.prompts.threshold",
        ),
        (
            "porch",
            br#"{"text": "x", "colour": "red"}"#.to_vec(),
            "unknown field `colour`",
        ),
        ("porch", long.into_bytes(), "at most 500"),
        (
            "porch",
            br#"{"text": "a person", "model": "clip"}"#.to_vec(),
            "in the config file",
        ),
        (
            "garden",
            b"a ladder".to_vec(),
            "there is no camera \"garden\"",
        ),
        (
            "porch",
            format!("{{\"text\": \"{}\"}}", "a".repeat(70_000)).into_bytes(),
            "at most 16384",
        ),
    ];
    for (camera, payload, why) in cases {
        let e = rt.add(camera, &payload, "mqtt", t(1)).unwrap_err();
        assert!(e.contains(why), "{why}: {e}");
    }
    // nothing changed: the same list, no version moved, no reload asked for, the same file
    let file = std::fs::read(d.join("runtime-prompts/porch.json")).unwrap();
    assert_eq!(
        (rt.listing("porch"), rt.version()),
        (before.clone(), version)
    );
    assert!(!rt.take_asked());
    assert_eq!(
        std::fs::read(d.join("runtime-prompts/porch.json")).unwrap(),
        file
    );
    rt.add("porch", b"a van", "mqtt", t(2)).unwrap();
    rt.add("porch", b"a cat", "mqtt", t(3)).unwrap();
    let e = rt.add("porch", b"a dog", "mqtt", t(4)).unwrap_err();
    assert!(e.contains("max_prompts = 3"), "{e}");
    rt.remove("porch", "a_van", REMOVED).unwrap();
    rt.remove("porch", "a_cat", REMOVED).unwrap();
    let _ = rt.take_asked();
    assert_eq!((rt.listing("porch"), rt.take_asked()), (before, false));
    assert!(rt.version() > version);
    let e = rt.remove("porch", "a_person", REMOVED).unwrap_err();
    assert!(e.contains("config file"), "{e}");
    let e = rt.remove("porch", "a_bus", REMOVED).unwrap_err();
    assert!(e.contains("it has a_ladder"), "{e}");
    let _ = std::fs::remove_dir_all(&d);
}

#[test]
fn a_saved_prompt_the_config_no_longer_allows_is_reported() {
    let d = temp("saved");
    let cfg = config(&d);
    let rt = Runtime::start(&cfg, t(0));
    rt.add(
        "porch",
        br#"{"text": "a ladder", "model": "owlvit"}"#,
        "mqtt",
        t(0),
    )
    .unwrap();
    let text = format!(
        "{}\n[mqtt]\nhost = \"127.0.0.1\"\nspool_dir = \"{}\"\n",
        CONFIG.replace("[models.owlvit]\ndir = \"models/tiny/owlvit\"\n", ""),
        d.join("spool").display()
    );
    let without = crate::config::parse(&text, &d.join("promptcam.toml")).unwrap();
    let (entries, problems) = read(&without, t(1));
    assert!(entries.is_empty());
    assert!(problems[0].contains("[models.owlvit]"), "{problems:?}");
    rt.set_base(&without);
    assert!(rt.list("porch").is_empty());
    assert_eq!(rt.take_reason("porch", "a_ladder"), Some(REMOVED));
    assert_eq!(rt.take_errors().len(), 1);
    let _ = std::fs::remove_dir_all(&d);
}
