//! The config's unit tests: defaults, and errors that name the key and line.

use super::*;

const GOOD: &str = r#"
[models.clip]
dir = "models/tiny/clip"

[[cameras]]
name = "Driveway"
source = "tests/fixtures/images"

[[cameras.prompts]]
text = "a delivery van"
model = "clip"
negatives = ["an empty driveway"]
"#;

fn err(text: &str) -> String {
    format!(
        "{:#}",
        parse(text, Path::new("t.toml")).expect_err("should fail")
    )
}

#[test]
fn a_small_config_gets_its_defaults() {
    let c = parse(GOOD, Path::new("t.toml")).unwrap();
    assert_eq!(c.device_id, "promptcam");
    let cam = &c.cameras[0];
    assert_eq!((cam.id.as_str(), cam.fps), ("driveway", 2.0));
    let p = &cam.prompts[0];
    assert_eq!(p.id, "a_delivery_van");
    assert_eq!((p.decide.threshold, p.decide.off_threshold), (0.5, 0.4));
    assert!(c.mqtt.is_none() && c.motion.is_some());
    assert!(c.http.is_none(), "the HTTP endpoint is off by default");
    let c = parse(
        &format!("{GOOD}[http]\nenabled = true\n"),
        Path::new("t.toml"),
    )
    .unwrap();
    let h = c.http.expect("enabled");
    assert_eq!(
        (h.listen.to_string(), h.stale_after),
        ("127.0.0.1:9464".to_string(), Duration::from_secs(30))
    );
    assert_eq!(
        (h.idle_timeout, h.max_connections),
        (Duration::from_secs(10), 64)
    );
}

#[test]
fn without_history_or_mqtt_state_goes_to_systemds_directory_then_beside_the_config() {
    let c = parse(GOOD, Path::new("/etc/promptcam/promptcam.toml")).unwrap();
    assert!(c.history.is_none() && c.mqtt.is_none());
    let etc = PathBuf::from("/etc/promptcam");
    assert_eq!(c.state_dir_with(None), etc);
    assert_eq!(c.state_dir_with(Some("".into())), etc);
    // under systemd (ProtectSystem=strict makes /etc read-only): its first state directory
    assert_eq!(
        c.state_dir_with(Some("/var/lib/promptcam:/var/lib/other".into())),
        PathBuf::from("/var/lib/promptcam")
    );
    // a history's directory still decides
    let h = parse(
        &format!("{GOOD}[history]\nenabled = true\npath = \"/srv/cam/history\"\n"),
        Path::new("/etc/promptcam/promptcam.toml"),
    )
    .unwrap();
    assert_eq!(
        h.state_dir_with(Some("/var/lib/promptcam".into())),
        PathBuf::from("/srv/cam")
    );
}

#[test]
fn bad_configs_name_the_key_and_line() {
    let cases: &[(&str, &[&str])] = &[
        (
            &GOOD.replace("negatives =", "negatvies ="),
            &["negatvies", "line 12"],
        ),
        (
            &GOOD.replace("model = \"clip\"", "model = \"yolo\""),
            &["cameras.prompts.model", "line 11", "\"yolo\""],
        ),
        (
            &format!("{GOOD}threshold = 1.5\n"),
            &["cameras.prompts.threshold", "line 13", "1.5", "0..=1"],
        ),
        (
            &format!("{GOOD}threshold = \"high\"\n"),
            &["line 13", "threshold"],
        ),
        (
            &GOOD.replace("negatives = [\"an empty driveway\"]", ""),
            &["negatives", "line 10"],
        ),
        (
            &format!("{GOOD}off_threshold = 0.9\nthreshold = 0.6\n"),
            &["off_threshold", "hysteresis"],
        ),
        (
            &GOOD.replace("[models.clip]\ndir = \"models/tiny/clip\"", ""),
            &["[models.clip]"],
        ),
        (
            &format!("{GOOD}[motion]\nwidth = 2\n"),
            &["motion.width", "line 14"],
        ),
        (&GOOD.replace("source", "sorce"), &["sorce"]),
        (
            &GOOD
                .replace("source =", "motion_crops = true\nsource =")
                .replace("[models.clip]", "[motion]\nenabled = false\n[models.clip]"),
            &["cameras.motion_crops", "line 9", "[motion]"],
        ),
        (
            &GOOD.replace(
                "source =",
                "motion_crops = true\nfull_frame_every = -1\nsource =",
            ),
            &["cameras.full_frame_every", "line 8", "0..=86400"],
        ),
        (
            &GOOD.replace("source =", "owlvit_when = \"sometimes\"\nsource ="),
            &["cameras.owlvit_when", "line 7", "clip_on"],
        ),
        (
            &format!("{GOOD}[http]\nenabled = true\nlisten = \"localhost\"\n"),
            &["http.listen", "line 15", "127.0.0.1:9464"],
        ),
        (
            &format!("{GOOD}[http]\nlisten = 9464\n"),
            &["line 14", "listen"],
        ),
        (
            &format!("{GOOD}[http]\nstale_after = 0\n"),
            &["http.stale_after", "line 14"],
        ),
        (&format!("{GOOD}[http]\nport = 1\n"), &["port"]),
        (
            &GOOD.replace("source =", "roi = [0, 0, 4294967396, 100]\nsource ="),
            &["cameras.roi", "line 7", "0..=65535"],
        ),
        (
            &GOOD.replace("source =", "roi = [0, 0, 100]\nsource ="),
            &["cameras.roi", "line 7"],
        ),
        (
            &GOOD.replace("source =", "roi = [10, 0, 10, 100]\nsource ="),
            &["cameras.roi", "x0 < x1"],
        ),
        (
            &format!("{GOOD}[http]\nmax_connections = 0\n"),
            &["http.max_connections", "line 14", "1..=65536"],
        ),
        (
            &format!("{GOOD}[http]\nidle_timeout = 0\n"),
            &["http.idle_timeout", "line 14"],
        ),
        (
            &format!("{GOOD}[models.yolo]\ndir = \"models/yolo\"\n"),
            &[
                "models.yolo",
                "line 13",
                "\"clip\", \"owlvit\", \"owlv2\" or \"clipseg\"",
            ],
        ),
    ];
    for (text, needles) in cases {
        let e = err(text);
        for n in *needles {
            assert!(e.contains(n), "expected {n:?} in: {e}");
        }
        assert!(e.contains("promptcam.example.toml"), "{e}");
    }
}

#[test]
fn a_file_that_is_not_utf8_gets_a_position() {
    let dir = std::env::temp_dir().join(format!("promptcam-config-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("latin1.toml");
    let mut bytes = GOOD.replace("Driveway", "Einfahrt").into_bytes();
    // name = "Einfahr\xeft": a Latin-1 byte, not UTF-8, on line 6, column 16
    let at = bytes.windows(5).position(|w| w == b"fahrt").unwrap() + 4;
    bytes.insert(at, 0xef);
    std::fs::write(&path, bytes).unwrap();
    let e = format!("{:#}", load(&path).expect_err("should fail"));
    let _ = std::fs::remove_dir_all(&dir);
    assert!(
        e.contains("line 6, column 16") && e.contains("not UTF-8"),
        "{e}"
    );
}

#[test]
fn owl_input_size_is_checked_against_the_model() {
    let owl = |size: &str| {
        format!("[models.owlvit]\ndir = \"models/tiny/owlvit\"\ninput_size = {size}\n{GOOD}")
    };
    let c = parse(&owl("384"), Path::new("t.toml")).unwrap();
    assert_eq!(c.model(ModelKind::OwlVit).unwrap().input_size, Some(384));
    // the tiny OWL-ViT has 32 px patches
    let e = err(&owl("500"));
    for n in ["models.owlvit.input_size", "line 3", "480 or 512"] {
        assert!(e.contains(n), "expected {n:?} in: {e}");
    }
    let e = err(&owl("0"));
    assert!(e.contains("out of range"), "{e}");
    let e = err(&GOOD.replace(
        "dir = \"models/tiny/clip\"",
        "dir = \"models/tiny/clip\"\ninput_size = 384",
    ));
    assert!(
        e.contains("models.clip.input_size") && e.contains("[models.owlvit]"),
        "{e}"
    );
}

#[test]
fn owlv2_prompts_need_their_model_table() {
    let prompt = "\n[[cameras.prompts]]\ntext = \"a person\"\nmodel = \"owlv2\"\n";
    let e = err(&format!("{GOOD}{prompt}"));
    assert!(e.contains("[models.owlv2]"), "{e}");
    let c = parse(
        &format!("[models.owlv2]\ndir = \"models/tiny/owlv2\"\ninput_size = 480\n{GOOD}{prompt}"),
        Path::new("t.toml"),
    )
    .unwrap();
    assert_eq!(c.cameras[0].prompts[1].model, ModelKind::Owlv2);
    assert_eq!(c.model(ModelKind::Owlv2).unwrap().input_size, Some(480));
}

#[test]
fn slugs_are_stable_ids() {
    assert_eq!(
        slug("A package on the doorstep!"),
        "a_package_on_the_doorstep"
    );
    assert_eq!(slug("  Front Door "), "front_door");
}

#[test]
fn ids_are_bounded_never_empty_and_distinct() {
    // ASCII ids are their slugs, as before
    assert_eq!(
        make_id("A package on the doorstep!"),
        "a_package_on_the_doorstep"
    );
    let edge = "x".repeat(ID_MAX);
    assert_eq!(make_id(&edge), edge);
    // long texts: cut, with a hash of the whole text
    let long = "a cat ".repeat(2000);
    let (a, b) = (make_id(&long), make_id(&format!("{long} dog")));
    assert!(a.len() <= ID_MAX && b.len() <= ID_MAX, "{a} {b}");
    assert!(a.starts_with("a_cat_a_cat") && a != b, "{a} {b}");
    assert_eq!(a, make_id(&long), "stable");
    assert_eq!(slug(&a), a, "still a slug");
    // nothing ASCII: a hash id, different per text
    let (cat, dog) = (make_id("猫"), make_id("犬"));
    assert!(
        cat.starts_with("id_") && cat.len() == 11 && cat != dog,
        "{cat} {dog}"
    );
    assert_eq!(make_id("!!!").len(), 11);
}

#[test]
fn models_device_sits_beside_the_model_tables() {
    let c = parse(GOOD, Path::new("t.toml")).unwrap();
    assert_eq!(c.device, DeviceChoice::Auto);
    for (word, want) in [("cpu", DeviceChoice::Cpu), ("cuda", DeviceChoice::Cuda)] {
        // in a [models] table before the kinds' tables, and beside an inline kind table
        let before = GOOD.replace(
            "[models.clip]",
            &format!("[models]\ndevice = \"{word}\"\n\n[models.clip]"),
        );
        let c = parse(&before, Path::new("t.toml")).unwrap();
        assert_eq!((c.device, c.models.len()), (want, 1), "{before}");
        let inline = format!(
            "[models]\ndevice = \"{word}\"\nclip = {{ dir = \"models/tiny/clip\" }}\n{}",
            GOOD.replace("[models.clip]\ndir = \"models/tiny/clip\"\n", "")
        );
        let c = parse(&inline, Path::new("t.toml")).unwrap();
        assert_eq!((c.device, c.models.len()), (want, 1), "{inline}");
    }
    let e = err(&GOOD.replace(
        "[models.clip]",
        "[models]\ndevice = \"gpu\"\n\n[models.clip]",
    ));
    assert!(
        e.contains("models.device")
            && e.contains("line 3")
            && e.contains("\"gpu\"")
            && e.contains("\"cuda\""),
        "{e}"
    );
    // a kind's table is still checked as one
    let e = err(&GOOD.replace(
        "[models.clip]",
        "[models]\nclipp = { dir = \"x\" }\n\n[models.clip]",
    ));
    assert!(
        e.contains("models.clipp") && e.contains("not a model kind"),
        "{e}"
    );
    let e = err(&GOOD.replace(
        "dir = \"models/tiny/clip\"",
        "dir = \"models/tiny/clip\"\ndevice = \"cuda\"",
    ));
    assert!(e.contains("device"), "{e}");
}
