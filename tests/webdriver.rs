//! A small WebDriver client for the browser tests: Debian's headless Chromium driven through
//! `chromedriver` (W3C WebDriver over HTTP on loopback), enough to open pages, type, click,
//! run a script and take screenshots. `scripts/test` installs both packages.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use base64::Engine;
use serde_json::{json, Value};

const ELEMENT: &str = "element-6066-11e4-a52e-4f735466cecf";

/// A chromedriver process and one browser session, both ended when dropped.
pub struct Browser {
    driver: Child,
    base: String,
    session: String,
    agent: ureq::Agent,
}

fn call(
    agent: &ureq::Agent,
    method: &str,
    url: &str,
    body: Option<Value>,
) -> Result<Value, String> {
    let r = match (method, body) {
        ("GET", _) => agent.get(url).call(),
        ("DELETE", _) => agent.delete(url).call(),
        (_, b) => agent
            .post(url)
            .header("Content-Type", "application/json")
            .send(b.unwrap_or(json!({})).to_string()),
    };
    let mut r = r.map_err(|e| format!("{method} {url}: {e}"))?;
    let text = r
        .body_mut()
        .read_to_string()
        .map_err(|e| format!("{method} {url}: {e}"))?;
    let v: Value =
        serde_json::from_str(&text).map_err(|e| format!("{method} {url}: {e}: {text}"))?;
    if r.status().as_u16() >= 400 || v["value"]["error"].is_string() {
        return Err(format!("{method} {url}: {}", v["value"]));
    }
    Ok(v["value"].clone())
}

/// The browser binary where each distribution puts it: Debian's `chromium` package installs
/// /usr/bin/chromium, Ubuntu's `chromium-browser` /usr/bin/chromium-browser (a snap wrapper);
/// `PROMPTCAM_CHROMIUM` names another.
fn chromium_binary() -> String {
    if let Ok(p) = std::env::var("PROMPTCAM_CHROMIUM") {
        return p;
    }
    let candidates = ["chromium", "chromium-browser", "google-chrome"];
    let path = std::env::var_os("PATH").unwrap_or_default();
    for name in candidates {
        for dir in std::env::split_paths(&path) {
            let p = dir.join(name);
            if !p.is_file() {
                continue;
            }
            // Ubuntu's packages only install wrappers of the chromium snap, which a machine
            // without a running snapd (a container, a chroot) never gets
            let wrapper = std::fs::read(&p).unwrap_or_default();
            if wrapper.windows(10).any(|w| w == b"/snap/bin/")
                && !Path::new("/snap/bin/chromium").exists()
            {
                panic!(
                    "{} only starts the chromium snap, which is not installed: run `sudo snap \
                     install chromium` (a container or chroot without snapd cannot; scripts/test \
                     skips the browser tests there and says so)",
                    p.display()
                );
            }
            return p.display().to_string();
        }
    }
    panic!(
        "unable to find a chromium binary (looked for {candidates:?} on PATH): install Debian's \
         chromium or Ubuntu's chromium-browser (scripts/test does), or set PROMPTCAM_CHROMIUM"
    )
}

impl Browser {
    pub fn start(profile: &Path) -> Browser {
        // first, so a missing browser (or Ubuntu's snap wrapper without its snap) says so
        // instead of the driver timing out
        let binary = chromium_binary();
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let driver = Command::new("chromedriver")
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| {
                panic!("unable to start chromedriver ({e}): install Debian's chromium and chromium-driver (scripts/test does)")
            });
        let base = format!("http://127.0.0.1:{port}");
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(Some(Duration::from_secs(60)))
            .build()
            .into();
        let end = Instant::now() + Duration::from_secs(20);
        while call(&agent, "GET", &format!("{base}/status"), None).map(|v| v["ready"] == true)
            != Ok(true)
        {
            assert!(Instant::now() < end, "chromedriver did not start");
            std::thread::sleep(Duration::from_millis(100));
        }
        // flags as for any headless Chromium on a machine without network access or a GPU
        let args = [
            "--headless=new",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-dev-shm-usage",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--window-size=1300,1700",
        ]
        .iter()
        .map(|s| s.to_string())
        .chain([format!("--user-data-dir={}", profile.display())])
        .collect::<Vec<_>>();
        let caps = json!({"capabilities": {"alwaysMatch": {"browserName": "chrome",
            "goog:chromeOptions": {"binary": binary, "args": args}}}});
        let session = call(&agent, "POST", &format!("{base}/session"), Some(caps))
            .unwrap_or_else(|e| panic!("{e}"));
        let session = session["sessionId"]
            .as_str()
            .expect("a session id")
            .to_string();
        Browser {
            driver,
            base,
            session,
            agent,
        }
    }

    fn cmd(&self, method: &str, path: &str, body: Option<Value>) -> Value {
        let url = format!("{}/session/{}{path}", self.base, self.session);
        call(&self.agent, method, &url, body).unwrap_or_else(|e| panic!("{e}"))
    }

    pub fn goto(&self, url: &str) {
        self.cmd("POST", "/url", Some(json!({ "url": url })));
    }

    /// Runs `script` (a function body that may `return`) in the page.
    pub fn exec(&self, script: &str) -> Value {
        self.cmd(
            "POST",
            "/execute/sync",
            Some(json!({ "script": script, "args": [] })),
        )
    }

    /// Waits until `condition` (a JavaScript expression) is true in the page.
    pub fn wait(&self, what: &str, condition: &str, timeout: Duration) {
        let end = Instant::now() + timeout;
        loop {
            if self.exec(&format!(
                "try {{ return !!({condition}); }} catch (e) {{ return false; }}"
            )) == json!(true)
            {
                return;
            }
            if Instant::now() > end {
                let text = self.exec("return document.body.innerText.slice(0, 2000);");
                panic!(
                    "timed out waiting until {what} ({condition}); the page says:\n{}",
                    text.as_str().unwrap_or("")
                );
            }
            std::thread::sleep(Duration::from_millis(150));
        }
    }

    pub fn find(&self, css: &str) -> String {
        let v = self.cmd(
            "POST",
            "/element",
            Some(json!({ "using": "css selector", "value": css })),
        );
        v[ELEMENT]
            .as_str()
            .unwrap_or_else(|| panic!("no element {css}: {v}"))
            .to_string()
    }

    pub fn click(&self, css: &str) {
        let id = self.find(css);
        self.cmd("POST", &format!("/element/{id}/click"), Some(json!({})));
    }

    /// Replaces the text of an input or textarea, as a user typing it.
    pub fn type_into(&self, css: &str, text: &str) {
        let id = self.find(css);
        self.cmd("POST", &format!("/element/{id}/clear"), Some(json!({})));
        self.cmd(
            "POST",
            &format!("/element/{id}/value"),
            Some(json!({ "text": text })),
        );
    }

    pub fn text(&self, css: &str) -> String {
        let id = self.find(css);
        self.cmd("GET", &format!("/element/{id}/text"), None)
            .as_str()
            .unwrap_or("")
            .to_string()
    }

    /// Saves a PNG of the window.
    pub fn screenshot(&self, path: &Path) {
        let b64 = self.cmd("GET", "/screenshot", None);
        let png = base64::engine::general_purpose::STANDARD
            .decode(b64.as_str().unwrap_or(""))
            .unwrap();
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, png).unwrap();
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        let url = format!("{}/session/{}", self.base, self.session);
        let _ = call(&self.agent, "DELETE", &url, None);
        let _ = self.driver.kill();
        let _ = self.driver.wait();
    }
}
