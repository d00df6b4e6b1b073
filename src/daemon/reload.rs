//! Reload: SIGHUP while running. Thresholds change at once; when prompts changed, the models
//! they need are built on a `promptcam-reload` thread while the old ones keep serving, and
//! swapped in between frames when they are ready (towers whose model and prompts did not
//! change are kept, not loaded again).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{channel, Receiver, TryRecvError};
use std::sync::Arc;
use std::time::SystemTime;

use anyhow::Result;

use crate::config::{CameraConfig, Config};
use crate::pipeline::towers::Towers;
use crate::pipeline::{Inference, PromptModel};

/// Whether two versions of a camera need the same models: the same prompts, apart from their
/// decision settings (which a reload applies at once).
fn same_models(a: &CameraConfig, b: &CameraConfig) -> bool {
    a.prompts.len() == b.prompts.len()
        && a.prompts.iter().zip(&b.prompts).all(|(p, q)| {
            (
                &p.text,
                p.model,
                &p.negatives,
                &p.ensemble,
                p.mask_threshold,
            ) == (
                &q.text,
                q.model,
                &q.negatives,
                &q.ensemble,
                q.mask_threshold,
            ) && (&p.tree, &p.examples, &p.negative_examples)
                == (&q.tree, &q.examples, &q.negative_examples)
                // a learned prompt taught again (new weights in the same file) is a new model
                && p.learned.as_ref().map(|l| &*l.prompt) == q.learned.as_ref().map(|l| &*l.prompt)
        })
}

/// What the reload thread builds: the towers, and every running camera's models on them.
struct Loaded {
    towers: Towers,
    models: Vec<(String, Vec<Box<dyn PromptModel>>)>,
}

/// How the reload thread loads the towers; tests put a gate in front of it.
type LoadFn = Arc<dyn Fn(&Config, &Towers) -> Result<Towers> + Send + Sync>;

/// Prompt reloads in the background. At most one load is in flight (never two racing to swap):
/// a SIGHUP that arrives meanwhile is queued, and the file is read again once the load is done,
/// so the newest file wins in the end and a change made during the load is not lost.
pub(super) struct Reloads {
    load: LoadFn,
    path: std::path::PathBuf,
    towers: Towers,
    /// The cameras whose prompts change (their new configs) and the models being built.
    in_flight: Option<(Vec<CameraConfig>, Receiver<Result<Loaded>>)>,
    queued: bool,
    /// Prompts the lab added, merged into every config read.
    added: crate::status::Added,
}

impl Reloads {
    pub(super) fn new(
        towers: Towers,
        path: std::path::PathBuf,
        added: crate::status::Added,
    ) -> Reloads {
        Reloads {
            load: Arc::new(|config, old| Towers::load(config, Some(old))),
            path,
            towers,
            in_flight: None,
            queued: false,
            added,
        }
    }

    /// Between two rounds of the inference loop: a SIGHUP's reload, models that finished
    /// loading, and a SIGHUP that came during the load.
    pub(super) fn between(&mut self, inf: &mut Inference, reload: &AtomicBool) -> Result<()> {
        // a SIGHUP, or a prompt added in the lab: the same path
        let asked = self.added.asked.swap(false, Ordering::Relaxed);
        if reload.swap(false, Ordering::Relaxed) | asked {
            self.reload(inf);
        }
        if self.poll(inf)? && std::mem::take(&mut self.queued) {
            self.reload(inf);
        }
        Ok(())
    }

    /// SIGHUP: re-read the config. Thresholds of prompts that still exist change at once; when a
    /// camera's prompts changed, the models are built in the background while the old prompts
    /// keep serving (the streams keep running; the changed cameras' open events end when their
    /// new prompts take over; for that while both sets of models may be in memory); an invalid
    /// file, or models that fail to load, are rejected and the running config kept. New cameras
    /// and sources take a restart.
    fn reload(&mut self, inf: &mut Inference) {
        let path = self.path.display();
        if self.in_flight.is_some() {
            self.queued = true;
            return tracing::info!("reload of {path} queued until the prompts being loaded are in");
        }
        let mut new = match crate::config::load(&self.path) {
            Ok(new) => new,
            Err(e) => return tracing::error!("reload rejected, keeping the running config: {e:#}"),
        };
        let added = self.added.merge(&mut new);
        if added > 0 {
            tracing::info!("{added} prompt(s) added in the prompt lab kept (not in {path})");
        }
        let (mut applied, mut changed) = (0, vec![]);
        for cam in inf.cameras.iter_mut() {
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
            } else {
                applied += cam.set_thresholds(&nc.prompts);
            }
        }
        tracing::info!("reloaded {path}: thresholds of {applied} prompt(s) applied");
        if changed.is_empty() {
            return;
        }
        // the running cameras with their prompts after the swap
        let mut target = new;
        target.cameras = inf
            .cameras
            .iter()
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
    fn poll(&mut self, inf: &mut Inference) -> Result<bool> {
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
                return Ok(true);
            }
        };
        let (wall, mut ended) = (SystemTime::now(), vec![]);
        for cam in inf.cameras.iter_mut() {
            let Some(k) = models.iter().position(|(id, _)| *id == cam.config.id) else {
                continue;
            };
            let (_, m) = models.swap_remove(k);
            match changed.iter().find(|c| c.id == cam.config.id) {
                Some(nc) => ended.extend(cam.swap_in(nc, m, wall)),
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
