//! Signals: SIGTERM/SIGINT ask for a graceful stop (finish the frame, flush events); a second one
//! exits at once. SIGHUP asks for a config reload. The handlers are installed before the models
//! load: a stop signal then exits at once and cleanly (there is nothing to flush yet), and a
//! SIGHUP is kept for when the daemon runs (the file is read again then).

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use anyhow::{Context, Result};
use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};
use signal_hook::iterator::Signals;

/// Shared between the threads: shutdown and reload requests, and the inference heartbeat.
#[derive(Default)]
pub struct Control {
    pub shutdown: AtomicBool,
    pub reload: AtomicBool,
    /// False while the daemon starts (models loading, nothing to flush yet): a stop signal then
    /// exits at once. The signal thread holds the lock while it exits, so the daemon cannot
    /// start its cameras and publisher under it.
    pub started: Mutex<bool>,
    /// Milliseconds since the daemon started at the inference thread's last loop.
    pub heartbeat_ms: AtomicU64,
}

/// Starts the signal thread; it lives as long as the process.
pub fn install(control: Arc<Control>) -> Result<()> {
    let mut signals =
        Signals::new([SIGTERM, SIGINT, SIGHUP]).context("unable to install signal handlers")?;
    std::thread::Builder::new()
        .name("signals".into())
        .spawn(move || {
            for sig in signals.forever() {
                let started = control
                    .started
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner);
                match sig {
                    SIGHUP if !*started => {
                        tracing::info!("SIGHUP while starting: the config is read again once the models are loaded");
                        control.reload.store(true, Ordering::Relaxed);
                    }
                    SIGHUP => {
                        tracing::info!("SIGHUP: reloading the config");
                        control.reload.store(true, Ordering::Relaxed);
                    }
                    _ if !*started => {
                        tracing::info!("stop signal while starting (loading the models): exiting");
                        std::process::exit(0);
                    }
                    _ if control.shutdown.swap(true, Ordering::Relaxed) => {
                        tracing::warn!("second stop signal: exiting now");
                        std::process::exit(130);
                    }
                    _ => tracing::info!("stop signal: finishing the current frame"),
                }
            }
        })
        .context("unable to start the signal thread")?;
    Ok(())
}
