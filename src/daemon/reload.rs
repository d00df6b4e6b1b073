//! Reload: SIGHUP while running, and run-time prompts added or removed (`crate::runtime`).
//! Thresholds change at once; when prompts changed, the models they need are built on a
//! `promptcam-reload` thread while the old ones keep serving, and swapped in between frames
//! when they are ready (towers whose model and prompts did not change are kept, not loaded
//! again; prompts that did not change keep their state and open events).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{channel, Receiver, TryRecvError};
use std::sync::Arc;
use std::time::SystemTime;

use anyhow::Result;

use crate::config::{CameraConfig, Config};
use crate::pipeline::start_cache::StartCache;
use crate::pipeline::towers::Towers;
use crate::pipeline::{Inference, PromptModel};
use crate::runtime::{self, Runtime};

/// Whether two versions of a camera need the same models: the same prompts, apart from their
/// decision settings (which a reload applies at once); a run-time prompt whose settings
/// (`expires`, `once`) changed is swapped too, so that its events follow them.
fn same_models(a: &CameraConfig, b: &CameraConfig) -> bool {
    a.prompts.len() == b.prompts.len()
        && a.prompts
            .iter()
            .zip(&b.prompts)
            .all(|(p, q)| p.id == q.id && p.same_model(q) && p.runtime == q.runtime)
}

/// What the reload thread builds: the towers, and every running camera's models on them.
struct Loaded {
    towers: Towers,
    models: Vec<(String, Vec<Box<dyn PromptModel>>)>,
}

/// How the reload thread loads the towers; tests put a gate in front of it.
type LoadFn = Arc<dyn Fn(&Config, &Towers) -> Result<Towers> + Send + Sync>;

/// Prompt reloads in the background. At most one load is in flight (never two racing to swap):
/// a SIGHUP or a run-time change that arrives meanwhile is queued, and done once the load is in,
/// so the newest file and run-time prompts win in the end and no change is lost.
pub(super) struct Reloads {
    load: LoadFn,
    /// The config file in force, without run-time prompts.
    base: Config,
    towers: Towers,
    /// The cameras whose prompts change (their new configs) and the models being built.
    in_flight: Option<(Vec<CameraConfig>, Receiver<Result<Loaded>>)>,
    queued: bool,
    /// Whether the queued reload reads the file again (a SIGHUP came).
    reread: bool,
    /// The prompts added at run time, merged into every config.
    runtime: Runtime,
}

impl Reloads {
    pub(super) fn new(towers: Towers, base: Config, runtime: Runtime) -> Reloads {
        Reloads {
            load: Arc::new(|config, old| {
                let cache = StartCache::open(&config.state_dir());
                let towers = Towers::load(config, Some(old), &cache);
                cache.save();
                towers
            }),
            base,
            towers,
            in_flight: None,
            queued: false,
            reread: false,
            runtime,
        }
    }

    /// Between two rounds of the inference loop: `once` prompts that fired and prompts that
    /// expired end, a SIGHUP's reload or a run-time change is taken, models that finished
    /// loading swap in, and a change that came during the load follows.
    pub(super) fn between(&mut self, inf: &Inference, reload: &AtomicBool) -> Result<()> {
        for (camera, prompt) in inf.take_once_started() {
            match self.runtime.remove(&camera, &prompt, runtime::ONCE) {
                Ok(()) => tracing::info!(
                    "camera {camera}: run-time prompt {prompt} ends after its first event (once)"
                ),
                Err(e) => tracing::debug!("camera {camera}: {e}"),
            }
        }
        self.runtime.expire(SystemTime::now());
        let sighup = reload.swap(false, Ordering::Relaxed);
        if self.runtime.take_asked() | sighup {
            self.reload(inf, sighup);
        }
        if self.poll(inf)? && std::mem::take(&mut self.queued) {
            let reread = std::mem::take(&mut self.reread);
            self.reload(inf, reread);
        }
        Ok(())
    }

    /// A SIGHUP (`reread`: read the config file again) or a run-time change. Thresholds of
    /// prompts that still exist change at once; when a camera's prompts changed, the models are
    /// built in the background while the old prompts keep serving (the streams keep running; the
    /// prompts that go away end their open events when the new set takes over; for that while
    /// both sets of models may be in memory); an invalid file, or models that fail to load, are
    /// rejected and the running config kept. New cameras and sources take a restart.
    fn reload(&mut self, inf: &Inference, reread: bool) {
        let path = self.base.path.display().to_string();
        if self.in_flight.is_some() {
            self.queued = true;
            self.reread |= reread;
            return tracing::info!("reload queued until the prompts being loaded are in");
        }
        if reread {
            match crate::config::load(&self.base.path) {
                Ok(new) => {
                    self.runtime.set_base(&new);
                    self.base = new;
                }
                Err(e) => {
                    return tracing::error!("reload rejected, keeping the running config: {e:#}")
                }
            }
        }
        let mut new = self.base.clone();
        let added = self.runtime.merge(&mut new);
        if reread && added > 0 {
            tracing::info!("{added} run-time prompt(s) kept (not in {path})");
        }
        let (mut applied, mut changed) = (0, vec![]);
        for mut cam in inf.cameras() {
            let Some(nc) = new.cameras.iter().find(|c| c.id == cam.config.id) else {
                continue;
            };
            if !same_models(nc, &cam.config) {
                tracing::info!(
                    "camera {}: loading {} prompt(s) in the background",
                    cam.config.id,
                    nc.prompts.len()
                );
                changed.push(nc.clone());
            } else if reread {
                applied += cam.set_thresholds(&nc.prompts);
            }
        }
        if reread {
            tracing::info!("reloaded {path}: thresholds of {applied} prompt(s) applied");
        }
        if changed.is_empty() {
            return;
        }
        // the running cameras with their prompts after the swap
        let mut target = new;
        target.cameras = inf
            .cameras()
            .map(|c| {
                changed
                    .iter()
                    .find(|n| n.id == c.config.id)
                    .unwrap_or(&c.config)
                    .clone()
            })
            .collect();
        self.start(target, changed);
    }

    fn start(&mut self, target: Config, changed: Vec<CameraConfig>) {
        let (done, rx) = channel();
        let (load, old) = (self.load.clone(), self.towers.clone());
        let spawned = std::thread::Builder::new()
            .name("promptcam-reload".into())
            .spawn(move || {
                let loaded = load(&target, &old).and_then(|towers| {
                    let models = target
                        .cameras
                        .iter()
                        .map(|c| Ok((c.id.clone(), towers.prompt_models(c)?)))
                        .collect::<Result<_>>()?;
                    Ok(Loaded { towers, models })
                });
                let _ = done.send(loaded); // a closed channel: the daemon is stopping
            });
        match spawned {
            Ok(_) => self.in_flight = Some((changed, rx)),
            Err(e) => tracing::error!("unable to start the reload thread: {e}; keeping the running prompts, send SIGHUP again to retry"),
        }
    }

    /// Swaps in the models if they finished loading, without waiting; true once the load is done.
    fn poll(&mut self, inf: &Inference) -> Result<bool> {
        let Some((_, rx)) = &self.in_flight else {
            return Ok(false);
        };
        let loaded = match rx.try_recv() {
            Err(TryRecvError::Empty) => return Ok(false),
            Ok(l) => l.map_err(|e| e.context("models failed to load")),
            Err(TryRecvError::Disconnected) => {
                Err(anyhow::anyhow!("the reload thread ended without a result"))
            }
        };
        let (changed, _) = self.in_flight.take().expect("checked above");
        let Loaded { towers, mut models } = match loaded {
            Ok(l) => l,
            Err(e) => {
                tracing::error!("reload rejected, keeping the running prompts: {e:#}");
                // run-time prompts that asked for these models go (else every later change
                // would fail the same way); each gets the reason on `prompts/error`
                let running: Vec<_> = inf.cameras().map(|c| c.config.clone()).collect();
                self.runtime.reject_unloaded(&running, &format!("{e:#}"));
                return Ok(true);
            }
        };
        let (wall, mut ended) = (SystemTime::now(), vec![]);
        for mut cam in inf.cameras() {
            let Some(k) = models.iter().position(|(id, _)| *id == cam.config.id) else {
                continue;
            };
            let (_, m) = models.swap_remove(k);
            match changed.iter().find(|c| c.id == cam.config.id) {
                Some(nc) => {
                    let id = cam.config.id.clone();
                    let reason = |p: &str| self.runtime.take_reason(&id, p);
                    ended.extend(cam.swap_in(nc, m, wall, &reason))
                }
                None => cam.rebind(m),
            }
        }
        self.towers = towers;
        inf.send(ended)?;
        Ok(true)
    }
}

#[cfg(test)]
#[path = "reload_tests.rs"]
mod tests;
