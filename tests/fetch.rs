//! `models/fetch.sh` without the model hub: with no network it fails and says which file to copy
//! where; a file whose sha256 differs from the pinned one is refused and deleted; a file with the
//! pinned hash is accepted and its source recorded. A local HTTP server stands in for the hub.

use std::io::Write;
use std::net::TcpListener;
use std::process::{Command, Output};
use std::sync::mpsc::{channel, Receiver};
use std::time::Duration;

use crate::fixture::{self, TempDir};

/// Serves `body` to every request on a free port; the paths requested arrive on the receiver.
fn hub(body: &'static [u8]) -> (String, Receiver<String>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let (tx, rx) = channel();
    std::thread::spawn(move || {
        for s in listener.incoming() {
            let Ok(mut s) = s else { continue };
            s.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
            let req = fixture::read_request(&mut std::io::BufReader::new(s.try_clone().unwrap()))
                .unwrap_or_default();
            let line = req.lines().next().unwrap_or("").to_string();
            let _ = tx.send(line.split(' ').nth(1).unwrap_or("").to_string());
            let head = format!(
                "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                body.len()
            );
            let _ = s.write_all(head.as_bytes()).and_then(|_| s.write_all(body));
        }
    });
    (base, rx)
}

fn fetch(base: &str, manifest: &std::path::Path, dest: &std::path::Path, args: &[&str]) -> Output {
    Command::new("bash")
        .arg(fixture::path("models/fetch.sh"))
        .args(args)
        .arg(dest)
        .env("PROMPTCAM_MODELS_BASE_URL", base)
        .env("PROMPTCAM_MODELS_MANIFEST", manifest)
        .env_remove("CLIP_REPO")
        .env_remove("OWLVIT_REPO")
        .output()
        .unwrap()
}

const BODY: &[u8] = b"{\"model_type\": \"clip\"}\n";
// a well-formed sha256 that is not the hash of BODY
const BODY_SHA: &str = "4d8dc8f2b7ab2b5b8ee4c5b2a6d5a5c8d1c1b0d1b4e0c7f9f1b8b1a2b3c4d5e6";

fn sha256(bytes: &[u8]) -> String {
    let tmp = TempDir::new("sha");
    let p = tmp.path().join("f");
    std::fs::write(&p, bytes).unwrap();
    let out = Command::new("sha256sum").arg(&p).output().unwrap();
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .next()
        .unwrap()
        .to_string()
}

#[test]
fn without_network_it_fails_with_the_copy_instructions() {
    let tmp = TempDir::new("fetch-offline");
    let closed = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let dest = tmp.path().join("models");
    // the real manifest: every file is named in the instructions
    let out = fetch(
        &format!("http://{closed}"),
        &fixture::path("models/manifest.sha256"),
        &dest,
        &[],
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("unable to download"), "{err}");
    for f in [
        "clip-vit-base-patch32/onnx/vision_model.onnx",
        "owlvit-base-patch32/onnx/model_quantized.onnx",
        "clip-vit-base-patch32/tokenizer.json",
    ] {
        assert!(
            err.contains(&format!("-> {}/{f}", dest.display())),
            "{f} in: {err}"
        );
    }
    assert!(
        err.contains("/Xenova/owlvit-base-patch32/resolve/main/onnx/model.onnx"),
        "{err}"
    );
    assert!(
        !err.contains("clipseg"),
        "CLIPSeg only with --with-clipseg: {err}"
    );
    assert!(
        !err.contains("owlv2"),
        "OWLv2 only with --with-owlv2: {err}"
    );
    let out = fetch(
        &format!("http://{closed}"),
        &fixture::path("models/manifest.sha256"),
        &dest,
        &["--with-clipseg"],
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains(&format!(
            "-> {}/clipseg-rd64-refined/onnx/model.onnx",
            dest.display()
        )),
        "{err}"
    );
    let out = fetch(
        &format!("http://{closed}"),
        &fixture::path("models/manifest.sha256"),
        &dest,
        &["--with-owlv2"],
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains(&format!(
            "-> {}/owlv2-base-patch16/onnx/model_quantized.onnx",
            dest.display()
        )) && err.contains("/Xenova/owlv2-base-patch16/resolve/main/preprocessor_config.json"),
        "{err}"
    );
    assert!(!err.contains("clipseg"), "{err}");
    assert!(
        !dest.join("clip-vit-base-patch32/config.json").exists()
            && !dest.join("clip-vit-base-patch32/config.json.part").exists()
    );
}

#[test]
fn a_checksum_mismatch_is_refused_and_a_match_accepted() {
    assert_ne!(sha256(BODY), BODY_SHA, "BODY_SHA is deliberately wrong");
    let tmp = TempDir::new("fetch-sha");
    let (base, paths) = hub(BODY);
    let dest = tmp.path().join("models");
    let manifest = tmp.path().join("manifest.sha256");

    std::fs::write(
        &manifest,
        format!("# test\n{BODY_SHA}  clip-vit-base-patch32/config.json\n"),
    )
    .unwrap();
    let out = fetch(&base, &manifest, &dest, &[]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(3), "{err}");
    assert!(
        err.contains("refusing clip-vit-base-patch32/config.json")
            && err.contains(BODY_SHA)
            && err.contains("deleted"),
        "{err}"
    );
    assert_eq!(
        paths.recv_timeout(Duration::from_secs(5)).unwrap(),
        "/Xenova/clip-vit-base-patch32/resolve/main/config.json"
    );
    let file = dest.join("clip-vit-base-patch32/config.json");
    assert!(
        !file.exists() && !dest.join("clip-vit-base-patch32/config.json.part").exists(),
        "nothing left behind"
    );

    // the right hash: accepted, with its source recorded
    std::fs::write(
        &manifest,
        format!("{}  clip-vit-base-patch32/config.json\n", sha256(BODY)),
    )
    .unwrap();
    let out = fetch(&base, &manifest, &dest, &["--strict"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(std::fs::read(&file).unwrap(), BODY);
    let sources = std::fs::read_to_string(dest.join("SOURCES")).unwrap();
    assert!(
        sources.contains(&sha256(BODY))
            && sources.contains(&format!(
                "{base}/Xenova/clip-vit-base-patch32/resolve/main/config.json"
            )),
        "{sources}"
    );

    // an unpinned file is refused under --strict, accepted with a warning otherwise
    std::fs::write(&manifest, "UNPINNED  owlvit-base-patch32/config.json\n").unwrap();
    let out = fetch(&base, &manifest, &dest, &["--strict"]);
    assert_eq!(out.status.code(), Some(3));
    assert!(!dest.join("owlvit-base-patch32/config.json").exists());
    let out = fetch(&base, &manifest, &dest, &[]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success() && err.contains("no pinned sha256") && err.contains(&sha256(BODY)),
        "{err}"
    );
}

#[test]
fn check_reports_each_model_present_and_loadable_with_its_files() {
    let demo = fixture::path("config/demo.toml");
    let (code, out, err) = fixture::promptcam(&["check", "--config", demo.to_str().unwrap()]);
    assert_eq!(code, 0, "{err}");
    let clip = out
        .lines()
        .find(|l| l.contains("model clip:"))
        .unwrap_or_else(|| panic!("{out}"));
    assert!(
        clip.contains("models/tiny/clip")
            && clip.contains("present and loads")
            && clip.contains("vision_model_quantized.onnx"),
        "{clip}"
    );
    assert!(
        out.lines()
            .any(|l| l.contains("model owlvit:") && l.contains("model.onnx")),
        "{out}"
    );
}
