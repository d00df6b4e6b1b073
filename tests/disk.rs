//! A disk that fills up: the daemon runs with its state directory (history, MQTT spool,
//! run-time prompts) on a small tmpfs that the test mounts in a mount namespace of its own
//! (`unshare`; as root in a chroot, where a namespace cannot make its mounts private, in the
//! test's own namespace, unmounted at the end), then fills to under `history.min_free_mb` and frees again. The history pauses
//! (logged once, `/healthz` degraded, records counted as skipped), every event still reaches
//! the broker, and the history resumes by itself once space is back.

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use crate::fixture::{self, TempDir};
use crate::mqtt::{Broker, Sub, SECS};
use crate::mqtt_delivery::Run;

/// (status, body) of a GET on the daemon's endpoint, None while it does not answer.
fn get(port: u16, path: &str) -> Option<(u16, String)> {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(10)))
        .build()
        .into();
    let mut r = agent
        .get(&format!("http://127.0.0.1:{port}{path}"))
        .call()
        .ok()?;
    let code = r.status().as_u16();
    Some((code, r.body_mut().read_to_string().unwrap_or_default()))
}

/// A figure of `/metrics` (a counter's `_total` or a gauge), 0 when absent.
fn metric(port: u16, name: &str) -> f64 {
    let (_, body) = get(port, "/metrics").unwrap_or_default();
    body.lines()
        .find(|l| l.starts_with(&format!("{name} ")) || l.starts_with(&format!("{name}_total ")))
        .and_then(|l| l.rsplit(' ').next()?.parse().ok())
        .unwrap_or(0.0)
}

fn wait(run: &Run, what: &str, timeout: Duration, mut ok: impl FnMut() -> bool) {
    let end = Instant::now() + timeout;
    while !ok() {
        assert!(
            Instant::now() < end,
            "timed out waiting until {what}; log:\n{}",
            run.log()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Runs `promptcam run --config config` with a fresh tmpfs of `size_mb` mounted on `mnt`, in a
/// mount namespace of its own. Files in `ctl` steer it: `fill` fills the tmpfs until only
/// `left_mb` is free, `free` deletes that filler again. The tmpfs is the returned one when it
/// had to be mounted here.
fn run_on_small_disk(
    config: &Path,
    mnt: &Path,
    ctl: &Path,
    size_mb: u32,
    left_mb: u32,
    log: &Path,
) -> (Run, Option<Mounted>) {
    // SAFETY: geteuid has no preconditions
    let root = unsafe { libc::geteuid() } == 0;
    // in a chroot `unshare --mount` cannot make "/" private ("cannot change root filesystem
    // propagation"); root mounts the tmpfs here instead
    let here = root
        && !Command::new("unshare")
            .args(["--mount", "true"])
            .stderr(std::process::Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
    let mounted = here.then(|| {
        let ok = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size_mb}m"), "tmpfs"])
            .arg(mnt)
            .status()
            .is_ok_and(|s| s.success());
        assert!(ok, "unable to mount a tmpfs on {}", mnt.display());
        Mounted(mnt.to_path_buf())
    });
    // the shell mounts (unless done here), starts a watcher of the control files, then becomes
    // the daemon; the watcher ends with it
    let script = r#"
[ "$7" = here ] || mount -t tmpfs -o size="$3"m tmpfs "$1" || exit 97
(
  while kill -0 $$ 2>/dev/null; do
    if [ -e "$2/fill" ] && [ ! -e "$2/filled" ]; then
      head -c $(( $(stat -f -c %a "$1") * $(stat -f -c %S "$1") - $4 * 1048576 )) /dev/zero > "$1/filler"
      touch "$2/filled"
    fi
    if [ -e "$2/free" ] && [ -e "$1/filler" ]; then rm -f "$1/filler"; fi
    sleep 0.1
  done
) &
exec "$5" run --config "$6"
"#;
    let mut cmd = match here {
        true => Command::new("sh"),
        false => {
            let mut c = Command::new("unshare");
            // root makes the namespace itself; anyone else as root of a user namespace of
            // their own
            if !root {
                c.arg("--map-root-user");
            }
            c.args(["--mount", "sh"]);
            c
        }
    };
    cmd.args(["-c", script, "sh"])
        .arg(mnt)
        .arg(ctl)
        .arg(size_mb.to_string())
        .arg(left_mb.to_string())
        .arg(env!("CARGO_BIN_EXE_promptcam"))
        .arg(config)
        .arg(if here { "here" } else { "namespace" });
    (Run::spawn(cmd, log), mounted)
}

/// A tmpfs mounted in the test's own namespace, unmounted when dropped (after the daemon).
struct Mounted(std::path::PathBuf);

impl Drop for Mounted {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

#[test]
fn a_full_disk_pauses_the_history_loses_no_event_and_recording_resumes() {
    let tmp = TempDir::new("disk-full");
    let broker = Broker::start(tmp.path(), "");
    let events = Sub::new(
        broker.port,
        "disk-events",
        &["promptcam/promptcam/events"],
        false,
    );
    let (mnt, ctl) = (tmp.path().join("state"), tmp.path().join("ctl"));
    std::fs::create_dir_all(&mnt).unwrap();
    std::fs::create_dir_all(&ctl).unwrap();
    let port = crate::history::free_port();
    let config = tmp.path().join("promptcam.toml");
    let text = format!(
        "{demo}\n[http]\nenabled = true\nlisten = \"127.0.0.1:{port}\"\n\n[history]\npath = \"{mnt}/history\"\nmin_free_mb = 8\nthumbnail_interval = 0\n\n[mqtt]\nhost = \"127.0.0.1\"\nport = {broker}\nspool_dir = \"{mnt}/spool\"\n",
        demo = fixture::demo_without_http().replace("fps = 2", "fps = 4"),
        mnt = mnt.display(),
        broker = broker.port,
    );
    std::fs::write(&config, text).unwrap();
    let (mut d, _mounted) =
        run_on_small_disk(&config, &mnt, &ctl, 64, 3, &tmp.path().join("daemon.log"));
    let start = Instant::now();
    while get(port, "/healthz").is_none() {
        if let Some(code) = d.exited() {
            panic!(
                "the daemon on a small tmpfs exited with {code} before answering: unable to make a mount namespace? \
                 Run the tests as root, or allow unprivileged user namespaces \
                 (Ubuntu 24.04: sudo sysctl kernel.apparmor_restrict_unprivileged_userns=0). Log:\n{}",
                d.log()
            );
        }
        assert!(start.elapsed() < SECS(60), "no answer; log:\n{}", d.log());
        std::thread::sleep(Duration::from_millis(100));
    }
    // plenty of space: the history records
    wait(&d, "the history records", SECS(30), || {
        metric(port, "promptcam_history_frames") >= 8.0
    });
    assert!(get(port, "/healthz").unwrap().1.starts_with("ok"));

    // the disk fills to 3 MB free, under min_free_mb = 8: recording pauses, the rest goes on
    std::fs::write(ctl.join("fill"), b"").unwrap();
    let mut health = String::new();
    wait(&d, "/healthz says the history is paused", SECS(30), || {
        health = get(port, "/healthz").unwrap_or_default().1;
        health.starts_with("degraded") && health.contains("history: paused")
    });
    assert!(
        health.contains("min_free_mb = 8") && health.contains("camera demo"),
        "{health}"
    );
    assert_eq!(metric(port, "promptcam_history_paused"), 1.0);
    let frames = metric(port, "promptcam_history_frames");
    let spooled_before = d.spooled().len();
    wait(&d, "events go out during the pause", SECS(60), || {
        d.spooled().len() >= spooled_before + 4
    });
    assert_eq!(
        metric(port, "promptcam_history_frames"),
        frames,
        "nothing is written while paused"
    );
    assert!(metric(port, "promptcam_history_skipped") > 0.0);

    // space is back: recording resumes by itself
    std::fs::write(ctl.join("free"), b"").unwrap();
    wait(&d, "/healthz is ok again", SECS(30), || {
        get(port, "/healthz").is_some_and(|(_, b)| b.starts_with("ok"))
    });
    wait(&d, "the history records again", SECS(30), || {
        metric(port, "promptcam_history_frames") > frames + 2.0
    });
    assert_eq!(metric(port, "promptcam_history_paused"), 0.0);

    d.term();
    assert_eq!(d.wait(SECS(20)), 0, "SIGTERM exits 0");
    let log = d.log();
    assert_eq!(
        log.matches("history: paused").count(),
        1,
        "logged once:\n{log}"
    );
    assert_eq!(log.matches("recording resumes").count(), 1, "{log}");
    // every spooled event reached the broker, in order, pause or not
    let mut delivered = vec![];
    while let Some(m) = events.wait_for(SECS(3), |_| true) {
        let v: serde_json::Value = serde_json::from_str(&m.payload).unwrap();
        delivered.push((
            v["type"].as_str().unwrap().to_string(),
            v["id"].as_str().unwrap().to_string(),
        ));
    }
    let spooled = d.spooled();
    assert!(spooled.len() >= spooled_before + 4, "{spooled:?}");
    assert_eq!(
        delivered, spooled,
        "every spooled event delivered, in order"
    );
    assert!(
        !log.contains("unable to write") && !log.contains("unable to spool"),
        "nothing failed for lack of space:\n{log}"
    );
}
