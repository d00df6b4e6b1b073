//! HTTPS on the endpoint (`[http] tls_cert`, `tls_key`), against the real daemon and `curl`:
//! `check` refuses a half-configured or mismatched pair, the pages and `/healthz` answer over
//! TLS with the certificate a CA made by `openssl` signed, a client that does not trust that CA
//! or speaks plain HTTP gets nothing, and the login cookie is `Secure`.

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use crate::fixture::{self, TempDir};
use crate::spawn::{Exit, Proc};

const TOKEN: &str = "a-test-token-0123456789";

/// `curl` with `args`: (exit code, stdout with the response headers, stderr).
fn curl(args: &[&str]) -> (i32, String, String) {
    let out = Command::new("curl")
        .args(["-sS", "-i", "--max-time", "5"])
        .args(args)
        .output()
        .expect("curl (Debian package curl) is needed");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn config(dir: &Path, port: u16, tls: &str) -> std::path::PathBuf {
    let path = dir.join("promptcam.toml");
    std::fs::write(
        &path,
        format!(
            "{}\n[http]\nenabled = true\nlisten = \"127.0.0.1:{port}\"\ntoken_file = \"token\"\n{tls}\n",
            fixture::demo_without_http()
        ),
    )
    .unwrap();
    path
}

#[test]
fn the_endpoint_serves_https_with_its_certificate_and_a_secure_cookie() {
    let tmp = TempDir::new("https");
    crate::mqtt::make_certs(tmp.path());
    std::fs::write(tmp.path().join("token"), TOKEN).unwrap();
    let port = crate::history::free_port();
    let check = |tls: &str| {
        let c = config(tmp.path(), port, tls);
        fixture::promptcam(&["check", "--config", c.to_str().unwrap()])
    };
    // half a pair, and a key that is not the certificate's, are refused before anything runs
    let (code, _, err) = check("tls_cert = \"server.pem\"");
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains("needs both tls_cert") && err.contains("http.tls_cert"),
        "{err}"
    );
    let (code, _, err) = check("tls_cert = \"server.pem\"\ntls_key = \"client.key\"");
    assert_ne!(code, 0, "{err}");
    assert!(err.contains("belongs to http.tls_cert"), "{err}");
    let (code, out, err) = check("tls_cert = \"server.pem\"\ntls_key = \"server.key\"");
    assert_eq!(code, 0, "{out}{err}");

    let config = config(
        tmp.path(),
        port,
        "tls_cert = \"server.pem\"\ntls_key = \"server.key\"",
    );
    let mut d = Proc::run(&config, None);
    let url = |path: &str| format!("https://127.0.0.1:{port}{path}");
    let ca = tmp.path().join("ca.pem");
    let ca = ca.to_str().unwrap();
    let bearer = format!("Authorization: Bearer {TOKEN}");
    let up = Instant::now();
    loop {
        let (code, out, _) = curl(&["--cacert", ca, "-H", &bearer, &url("/healthz")]);
        if code == 0 && out.starts_with("HTTP/1.1 200") {
            assert!(out.contains("\r\n\r\nok\n"), "{out}");
            break;
        }
        assert!(d.running(), "the daemon exited: {}", d.log());
        assert!(up.elapsed() < Duration::from_secs(60), "{out}\n{}", d.log());
        std::thread::sleep(Duration::from_millis(200));
    }
    assert!(
        d.log()
            .contains(&format!("HTTP endpoint on https://127.0.0.1:{port}/")),
        "{}",
        d.log()
    );
    // the token is still needed over TLS
    let (_, out, _) = curl(&["--cacert", ca, &url("/api/status")]);
    assert!(out.starts_with("HTTP/1.1 401"), "{out}");
    let (_, out, _) = curl(&["--cacert", ca, "-H", &bearer, &url("/api/status")]);
    assert!(
        out.starts_with("HTTP/1.1 200") && out.contains("\"cameras\""),
        "{out}"
    );
    // a client that does not trust the CA refuses the certificate; plain HTTP gets no answer
    let other = tmp.path().join("other-ca.pem");
    let (code, out, err) = curl(&["--cacert", other.to_str().unwrap(), &url("/healthz")]);
    assert_eq!(code, 60, "curl: certificate problem expected: {out}{err}");
    let (code, out, err) = curl(&[&format!("http://127.0.0.1:{port}/healthz")]);
    assert!(
        code != 0 && !out.contains("200"),
        "plain HTTP: {code} {out}{err}"
    );
    // the login cookie travels over TLS only
    let (_, out, _) = curl(&[
        "--cacert",
        ca,
        "--data",
        &format!("token={TOKEN}"),
        &url("/login"),
    ]);
    let cookie = out
        .lines()
        .find(|l| l.to_ascii_lowercase().starts_with("set-cookie:"))
        .unwrap_or_else(|| panic!("no cookie: {out}"));
    assert!(
        cookie.contains("; Secure")
            && cookie.contains("HttpOnly")
            && cookie.contains("SameSite=Strict"),
        "{cookie}"
    );
    assert!(!d.log().contains(TOKEN), "the token is never logged");
    d.signal(libc::SIGTERM);
    assert_eq!(d.wait(Duration::from_secs(20)), Some(Exit::Code(0)));
}
