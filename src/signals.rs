//! Signals: SIGTERM/SIGINT ask for a graceful stop (finish the frame, flush events); a second one
//! exits at once. SIGHUP asks for a config reload.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use anyhow::{Context, Result};
use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};
use signal_hook::iterator::Signals;

use crate::daemon::Control;

/// Starts the signal thread; it lives as long as the process.
pub fn install(control: Arc<Control>) -> Result<()> {
    let mut signals =
        Signals::new([SIGTERM, SIGINT, SIGHUP]).context("unable to install signal handlers")?;
    std::thread::Builder::new()
        .name("signals".into())
        .spawn(move || {
            for sig in signals.forever() {
                match sig {
                    SIGHUP => {
                        tracing::info!("SIGHUP: reloading the config");
                        control.reload.store(true, Ordering::Relaxed);
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
