//! `check` and `run` agree: a table of configs, each given to both through the real binary. What
//! `check` refuses, `run` refuses with the same complaint (exit 2), and what `check` passes,
//! `run` starts (a finite replay that ends with exit 0). `check` never connects anywhere.

use std::path::Path;

use crate::fixture::{self, TempDir};

/// A row: its name, the config text, and what both complaints must contain (`None`: valid).
type Row = (&'static str, String, Option<&'static [&'static str]>);

fn rows(dir: &Path, base: &str) -> Vec<Row> {
    let source = |s: &str| {
        let line = base.lines().find(|l| l.starts_with("source = ")).unwrap();
        base.replace(line, &format!("source = {s:?}"))
    };
    let roi = |r: &str| base.replace("fps = 10", &format!("fps = 10\nroi = {r}"));
    let file = dir.join("a-file");
    std::fs::write(&file, "not a directory").unwrap();
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mqtt = |spool: &Path| {
        format!(
            "{base}\n[mqtt]\nhost = \"127.0.0.1\"\nport = {closed}\nspool_dir = \"{}\"\n",
            spool.display()
        )
    };
    let nothing = dir.join("nowhere").join("*.jpg");
    vec![
        ("the replay", base.to_string(), None),
        (
            "a spool directory still to be made",
            mqtt(&dir.join("new").join("spool")),
            None,
        ),
        ("an ROI inside u32", roi("[0, 0, 100, 100]"), None),
        ("an empty source", source(""), Some(&["no image files"])),
        (
            "a glob that matches nothing",
            source(nothing.to_str().unwrap()),
            Some(&["no image files"]),
        ),
        (
            "an URL without a host",
            source("http://"),
            Some(&["no host"]),
        ),
        (
            "a snapshot URL without a host",
            source("snapshot+http://user:secret@"),
            Some(&["no host"]),
        ),
        (
            "an RTSP URL without a host",
            source("rtsp://"),
            Some(&["no host"]),
        ),
        (
            "a V4L2 camera that is not there",
            source("/dev/video97@640x480"),
            Some(&["unable to open camera /dev/video97"]),
        ),
        (
            "a spool directory that is a file",
            mqtt(&file),
            Some(&["MQTT spool directory", "a-file"]),
        ),
        (
            "a spool directory under a file",
            mqtt(&file.join("spool")),
            Some(&["MQTT spool directory", "a-file"]),
        ),
        (
            "an ROI past u32 (it wrapped to 100)",
            roi("[0, 0, 4294967396, 100]"),
            Some(&["cameras.roi", "0..=65535"]),
        ),
        (
            "a negative ROI",
            roi("[-1, 0, 100, 100]"),
            Some(&["cameras.roi"]),
        ),
    ]
}

#[test]
fn check_and_run_agree_on_every_config() {
    let tmp = TempDir::new("check-run");
    let config = crate::daemon::replay(tmp.path(), &["rocket.png"], false, 0.6);
    let base = std::fs::read_to_string(&config).unwrap();
    let mut table = rows(tmp.path(), &base);
    // a file that is not UTF-8: a Latin-1 byte in the camera's name, on line 10
    let mut latin1 = base.replace("Launch pad", "Launch p\u{e4}d").into_bytes();
    let at = latin1
        .windows(2)
        .position(|w| w == "\u{e4}".as_bytes())
        .unwrap();
    latin1.splice(at..at + 2, [0xe4]);
    let latin1_path = tmp.path().join("latin1.toml");
    std::fs::write(&latin1_path, latin1).unwrap();
    table.push((
        "a Latin-1 file",
        String::new(),
        Some(&["line 10, column 17", "UTF-8"]),
    ));
    for (name, text, complaint) in table {
        let path = if text.is_empty() {
            latin1_path.clone()
        } else {
            let p = tmp.path().join("row.toml");
            std::fs::write(&p, &text).unwrap();
            p
        };
        let path = path.to_str().unwrap();
        let (check, check_out, check_err) = fixture::promptcam(&["check", "--config", path]);
        let (run, _, run_err) = fixture::promptcam(&["run", "--config", path]);
        match complaint {
            None => {
                assert_eq!(check, 0, "{name}: check refused it: {check_err}");
                assert!(check_out.contains("valid"), "{name}: {check_out}");
                assert_eq!(run, 0, "{name}: run refused what check passed: {run_err}");
            }
            Some(needles) => {
                assert_eq!(check, 2, "{name}: check passed it: {check_out}");
                assert_eq!(run, 2, "{name}: run started it: {run_err}");
                for n in needles {
                    assert!(check_err.contains(n), "{name}: check says {check_err}");
                    assert!(run_err.contains(n), "{name}: run says {run_err}");
                }
                assert!(
                    !check_err.contains("secret") && !run_err.contains("secret"),
                    "{name}: {check_err} {run_err}"
                );
            }
        }
    }
}
