//! Signals against the real daemon: while the models load (held up by a model file that is a
//! FIFO, so the test decides when loading ends) a SIGHUP is kept for later and a SIGTERM exits 0
//! with a log line; once running, SIGTERM ends the open events before exiting 0, and a second
//! stop signal exits 130 at once.

use std::ffi::CString;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::fixture::{self, TempDir};
use crate::spawn::{Exit, Proc};

const SECS: fn(u64) -> Duration = Duration::from_secs;

/// A replay of rocket photos whose CLIP model directory has a FIFO for `config.json`: the daemon
/// blocks reading it until [`release`] writes it. Returns (config, the FIFO, its contents).
fn held_up(dir: &Path) -> (PathBuf, PathBuf, Vec<u8>) {
    let clip = dir.join("clip");
    fixture::copy_model(&fixture::path("models/tiny/clip"), &clip, |_| true);
    let fifo = clip.join("config.json");
    let contents = std::fs::read(&fifo).unwrap();
    std::fs::remove_file(&fifo).unwrap();
    let c = CString::new(fifo.as_os_str().as_bytes()).unwrap();
    // SAFETY: mkfifo reads the NUL-terminated path only
    assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0, "mkfifo");
    let config = crate::daemon::replay(dir, &["rocket.png", "rocket.png"], true, 0.6);
    let text = std::fs::read_to_string(&config).unwrap().replace(
        &fixture::path("models/tiny/clip").display().to_string(),
        &clip.display().to_string(),
    );
    std::fs::write(&config, text).unwrap();
    (config, fifo, contents)
}

/// Lets the load go on: writes the FIFO once, then puts a plain file in its place.
fn release(fifo: &Path, contents: &[u8]) {
    std::fs::write(fifo, contents).unwrap();
    let plain = fifo.with_extension("plain");
    std::fs::write(&plain, contents).unwrap();
    std::fs::rename(&plain, fifo).unwrap();
}

/// Starts the daemon on `config` and waits until it is loading its models.
fn loading(config: &Path) -> Proc {
    let d = Proc::run(config, None);
    // logged after the handlers are installed, just before the models load
    assert!(d.wait_log("loading the models", SECS(30)), "{}", d.log());
    std::thread::sleep(Duration::from_millis(300));
    d
}

#[test]
fn sighup_while_the_models_load_is_kept_until_they_are_in() {
    let tmp = TempDir::new("signals-hup");
    let (config, fifo, contents) = held_up(tmp.path());
    let mut d = loading(&config);
    d.signal(libc::SIGHUP);
    std::thread::sleep(Duration::from_millis(500));
    assert!(
        d.running(),
        "a SIGHUP during loading ended the daemon: {:?}\n{}",
        d.wait(SECS(1)),
        d.log()
    );
    assert!(d.log().contains("SIGHUP while starting"), "{}", d.log());
    release(&fifo, &contents);
    let e = d
        .next_event(SECS(60))
        .expect("events once the models are in");
    assert_eq!(e["type"], "start", "{e}");
    assert!(
        d.wait_log("reloaded", SECS(10)),
        "the SIGHUP is served once running: {}",
        d.log()
    );
    d.signal(libc::SIGTERM);
    assert_eq!(d.wait(SECS(20)), Some(Exit::Code(0)), "{}", d.log());
}

#[test]
fn sigterm_while_the_models_load_exits_0_and_says_so() {
    let tmp = TempDir::new("signals-term");
    let (config, _fifo, _) = held_up(tmp.path());
    let mut d = loading(&config);
    d.signal(libc::SIGTERM);
    assert_eq!(d.wait(SECS(5)), Some(Exit::Code(0)), "{}", d.log());
    assert!(
        d.log().contains("stop signal while starting"),
        "{}",
        d.log()
    );
}

#[test]
fn sigterm_ends_open_events_and_a_second_signal_exits_130_at_once() {
    let tmp = TempDir::new("signals-stop");
    let config = crate::daemon::replay(tmp.path(), &["rocket.png", "rocket.png"], true, 0.6);
    let mut d = Proc::run(&config, None);
    let start = d.next_event(SECS(60)).expect("a start event");
    assert_eq!(start["type"], "start", "{start}");
    d.signal(libc::SIGTERM);
    assert_eq!(d.wait(SECS(20)), Some(Exit::Code(0)), "{}", d.log());
    let rest = d.events();
    let end = rest.last().expect("an end event after SIGTERM");
    assert_eq!(
        (&end["type"], &end["id"]),
        (&"end".into(), &start["id"]),
        "{rest:?}"
    );
    assert!(end["ended_at"].is_string(), "{end}");

    // a second stop signal (another kind: the same signal twice may merge into one)
    let mut d = Proc::run(&config, None);
    assert!(d.next_event(SECS(60)).is_some(), "{}", d.log());
    d.signal(libc::SIGTERM);
    d.signal(libc::SIGINT);
    assert_eq!(d.wait(SECS(2)), Some(Exit::Code(130)), "{}", d.log());
    assert!(d.log().contains("second stop signal"), "{}", d.log());
}
