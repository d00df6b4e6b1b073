//! Reload: SIGHUP while running. Thresholds change at once; a camera whose prompts changed gets
//! its new models built on a `promptcam-reload` thread while the old ones keep serving, and
//! swapped in between frames when they are ready.

use std::sync::mpsc::{channel, Receiver, SyncSender, TryRecvError};
use std::sync::Arc;

use anyhow::Result;

use super::{emit, load_models, load_seg, prompt_configs, prompt_statuses, Camera, Models};
use crate::config::{CameraConfig, Config};
use crate::decide::Transition;
use crate::event::Event;
use crate::model::ClipSeg;
use crate::model::ModelKind;

/// What defines a camera's models: its prompts without their decision settings.
fn prompt_set(c: &CameraConfig) -> Vec<(String, ModelKind, Vec<String>, Vec<String>)> {
    c.prompts
        .iter()
        .map(|p| {
            (
                p.text.clone(),
                p.model,
                p.negatives.clone(),
                p.ensemble.clone(),
            )
        })
        .collect()
}

/// A camera's models for a new prompt set, as the reload thread builds them.
type Loaded = (Models, Option<ClipSeg>);

/// How the reload thread builds a camera's models; tests put a gate in front of it.
type LoadFn = Arc<dyn Fn(&Config, &CameraConfig) -> Result<Loaded> + Send + Sync>;

/// Prompt reloads in the background. At most one load is in flight (never two racing to swap):
/// a SIGHUP that arrives meanwhile is queued, and the file is read again once the load is done,
/// so the newest file wins in the end and a change made during the load is not lost.
pub(super) struct Reloads {
    load: LoadFn,
    /// Per camera, as it finishes: its id, its new config and its models (or why not).
    in_flight: Option<Receiver<(String, CameraConfig, Result<Loaded>)>>,
    pub(super) queued: bool,
}

impl Reloads {
    pub(super) fn new() -> Reloads {
        Reloads {
            load: Arc::new(|config, cam| Ok((load_models(config, cam)?, load_seg(config, cam)?))),
            in_flight: None,
            queued: false,
        }
    }

    /// Loads the models of `changed` cameras on the reload thread.
    fn start(&mut self, new: Config, changed: Vec<CameraConfig>) {
        let (done, rx) = channel();
        let load = self.load.clone();
        let spawned = std::thread::Builder::new()
            .name("promptcam-reload".into())
            .spawn(move || {
                for nc in changed {
                    let loaded = load(&new, &nc);
                    if done.send((nc.id.clone(), nc, loaded)).is_err() {
                        return; // the daemon is stopping
                    }
                }
            });
        match spawned {
            Ok(_) => self.in_flight = Some(rx),
            Err(e) => tracing::error!("unable to start the reload thread: {e}; keeping the running prompts, send SIGHUP again to retry"),
        }
    }

    /// Swaps in the models that finished loading, without waiting; true once the load is done.
    pub(super) fn poll(&mut self, cameras: &mut [Camera], tx: &SyncSender<Event>) -> bool {
        let Some(rx) = &self.in_flight else {
            return false;
        };
        loop {
            match rx.try_recv() {
                Ok((id, nc, loaded)) => {
                    let Some(cam) = cameras.iter_mut().find(|c| c.config.id == id) else {
                        continue;
                    };
                    match loaded {
                        Err(e) => tracing::error!(
                            "reload of camera {id} rejected, keeping its prompts: {e:#}"
                        ),
                        Ok(models) => swap_in(cam, &nc, models, tx),
                    }
                }
                Err(TryRecvError::Empty) => return false,
                Err(TryRecvError::Disconnected) => {
                    self.in_flight = None;
                    return true;
                }
            }
        }
    }
}

/// A camera's new prompts take over: its open events end, its models, deciders and the
/// prompts its status shows are replaced.
fn swap_in(
    cam: &mut Camera,
    nc: &CameraConfig,
    ((clip, owl, prompts), seg): Loaded,
    tx: &SyncSender<Event>,
) {
    for i in 0..cam.prompts.len() {
        let score = cam.prompts[i].decider.best().unwrap_or(0.0);
        if cam.prompts[i].open.is_some() && emit(cam, i, Transition::Ended, score, tx).is_err() {
            return;
        }
    }
    cam.status.set_prompts(prompt_statuses(&prompts));
    cam.status.set_prompt_configs(prompt_configs(&prompts));
    (cam.clip, cam.owl, cam.seg, cam.prompts) = (clip, owl, seg, prompts);
    cam.config.prompts = nc.prompts.clone();
    cam.config.owlvit_when = nc.owlvit_when;
    tracing::info!(
        "camera {}: {} prompt(s) loaded",
        cam.config.id,
        cam.prompts.len()
    );
}

/// SIGHUP: re-read the config. Thresholds of prompts that still exist change at once; a camera
/// whose prompts changed gets new models, loaded in the background while its old prompts keep
/// serving (its stream keeps running; its open events end when the new ones take over; for that
/// while both sets of models are in memory); an invalid file, or models that fail to load, are
/// rejected and the running config kept. While a load is in flight the whole SIGHUP waits for
/// it (see [`Reloads`]). New cameras and sources take a restart.
pub(super) fn reload(cameras: &mut [Camera], path: &std::path::Path, reloads: &mut Reloads) {
    if reloads.in_flight.is_some() {
        reloads.queued = true;
        return tracing::info!(
            "reload of {} queued until the prompts being loaded are in",
            path.display()
        );
    }
    let new = match crate::config::load(path) {
        Ok(new) => new,
        Err(e) => return tracing::error!("reload rejected, keeping the running config: {e:#}"),
    };
    let mut changed = 0;
    let mut load = vec![];
    for cam in cameras.iter_mut() {
        let Some(nc) = new.cameras.iter().find(|c| c.id == cam.config.id) else {
            continue;
        };
        if prompt_set(nc) != prompt_set(&cam.config) {
            tracing::info!(
                "camera {}: loading {} prompt(s) in the background",
                cam.config.id,
                nc.prompts.len()
            );
            load.push(nc.clone());
            continue;
        }
        for p in cam.prompts.iter_mut() {
            if let Some(np) = nc.prompts.iter().find(|n| n.id == p.config.id) {
                p.decider
                    .set_thresholds(np.decide.threshold, np.decide.off_threshold);
                p.config.decide.threshold = np.decide.threshold;
                p.config.decide.off_threshold = np.decide.off_threshold;
                p.gap = super::configured_gap(&np.decide);
                changed += 1;
            }
        }
        cam.status.set_prompts(prompt_statuses(&cam.prompts));
        cam.status.set_prompt_configs(prompt_configs(&cam.prompts));
    }
    tracing::info!(
        "reloaded {}: thresholds of {changed} prompt(s) applied",
        path.display()
    );
    if !load.is_empty() {
        reloads.start(new, load);
    }
}

#[cfg(test)]
mod tests {
    use super::super::*;
    use super::*;
    use std::sync::Mutex;

    /// A config file in a fresh directory, removed when dropped.
    struct ConfigFile(std::path::PathBuf);

    impl ConfigFile {
        fn new(tag: &str) -> ConfigFile {
            let dir = std::env::temp_dir().join(format!("promptcam-{tag}-{}", std::process::id()));
            std::fs::create_dir_all(&dir).expect("a temporary directory");
            ConfigFile(dir.join("promptcam.toml"))
        }

        /// One camera with the tiny CLIP model and one prompt against "a photo of a cat".
        fn write(&self, prompt: &str) {
            let text = format!(
                "[models.clip]\ndir = \"{}/models/tiny/clip\"\n\n[motion]\nenabled = false\n\n[[cameras]]\nname = \"Launch pad\"\nsource = \"tests/fixtures/images\"\n\n\
                 [[cameras.prompts]]\ntext = \"{prompt}\"\nmodel = \"clip\"\nnegatives = [\"a photo of a cat\"]\nthreshold = 0.6\nwindow = 1\nmin_frames = 1\noff_delay = 0\n",
                env!("CARGO_MANIFEST_DIR")
            );
            std::fs::write(&self.0, text).expect("a writable config file");
        }
    }

    impl Drop for ConfigFile {
        fn drop(&mut self) {
            if let Some(dir) = self.0.parent() {
                let _ = std::fs::remove_dir_all(dir);
            }
        }
    }

    fn rocket() -> Frame {
        let path = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/fixtures/images/rocket.png"
        );
        let image = image::open(path).expect("the rocket fixture").to_rgb8();
        Frame {
            image,
            seq: 0,
            captured_at: SystemTime::now(),
            monotonic: Instant::now(),
        }
    }

    /// Polls until the load in flight is done (the bound only guards against a hang).
    fn finish(reloads: &mut Reloads, cameras: &mut [Camera], tx: &SyncSender<Event>) {
        let end = Instant::now() + Duration::from_secs(60);
        while !reloads.poll(cameras, tx) {
            assert!(Instant::now() < end, "the reload never finished");
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    fn kinds(events: &[Event]) -> Vec<(String, EventKind)> {
        events.iter().map(|e| (e.prompt.clone(), e.kind)).collect()
    }

    #[test]
    fn old_prompts_keep_serving_while_new_models_load_then_swap_in() {
        let file = ConfigFile::new("reload-swap");
        file.write("a rocket on the launch pad");
        let mut cameras = prepare(&crate::config::load(&file.0).expect("a valid config"))
            .expect("the tiny models");
        let (tx, rx) = sync_channel(256);
        // the new models load only when the test opens the gate
        let (open, gate) = channel::<()>();
        let gate = Mutex::new(gate);
        let mut reloads = Reloads::new();
        let real = reloads.load.clone();
        reloads.load = Arc::new(move |config, cam| {
            let _ = gate.lock().map(|g| g.recv());
            real(config, cam)
        });

        file.write("a rocket");
        reload(&mut cameras, &file.0, &mut reloads);
        assert!(
            reloads.in_flight.is_some(),
            "the changed prompt loads in the background"
        );
        // a second SIGHUP during the load is queued, not a second load racing the first
        reload(&mut cameras, &file.0, &mut reloads);
        assert!(reloads.queued);

        // frames are analysed with the old prompt meanwhile
        for _ in 0..3 {
            assert!(analyse(&mut cameras[0], &rocket(), &tx)
                .expect("analysis")
                .is_some());
            assert!(
                !reloads.poll(&mut cameras, &tx),
                "the load is still waiting at the gate"
            );
        }
        let during: Vec<Event> = rx.try_iter().collect();
        assert!(
            kinds(&during).contains(&("a_rocket_on_the_launch_pad".into(), EventKind::Start)),
            "{:?}",
            kinds(&during)
        );
        assert_eq!(
            cameras[0].prompts[0].config.id,
            "a_rocket_on_the_launch_pad"
        );

        open.send(()).expect("the reload thread waits at the gate");
        finish(&mut reloads, &mut cameras, &tx);
        // the old prompt's open event ends as the new prompt takes over
        let swapped: Vec<Event> = rx.try_iter().collect();
        assert_eq!(
            kinds(&swapped),
            vec![("a_rocket_on_the_launch_pad".into(), EventKind::End)]
        );
        assert_eq!(cameras[0].config.prompts[0].text, "a rocket");
        assert_eq!(
            cameras[0]
                .status
                .prompts()
                .iter()
                .map(|p| p.id.clone())
                .collect::<Vec<_>>(),
            vec!["a_rocket".to_string()]
        );
        for _ in 0..3 {
            analyse(&mut cameras[0], &rocket(), &tx).expect("analysis");
        }
        let after: Vec<Event> = rx.try_iter().collect();
        assert!(
            kinds(&after).contains(&("a_rocket".into(), EventKind::Start)),
            "{:?}",
            kinds(&after)
        );
        assert!(
            after.iter().all(|e| e.prompt == "a_rocket"),
            "{:?}",
            kinds(&after)
        );

        // the queued SIGHUP re-reads the file: its prompts are in already, so nothing loads again
        assert!(std::mem::take(&mut reloads.queued));
        reload(&mut cameras, &file.0, &mut reloads);
        assert!(reloads.in_flight.is_none());
    }

    #[test]
    fn threshold_commands_keep_the_configured_hysteresis_through_zero() {
        let file = ConfigFile::new("reload-gap");
        file.write("a rocket on the launch pad");
        let text = std::fs::read_to_string(&file.0)
            .expect("the config")
            .replace(
                "threshold = 0.6\n",
                "threshold = 0.6\noff_threshold = 0.4\n",
            );
        std::fs::write(&file.0, &text).expect("a writable config file");
        let mut cameras = prepare(&crate::config::load(&file.0).expect("a valid config"))
            .expect("the tiny models");
        let id = "a_rocket_on_the_launch_pad";
        let set = |cameras: &mut [Camera], value: f32| {
            assert!(cameras[0].status.request_threshold(id, value));
            apply_threshold_requests(&mut cameras[0]);
            let d = cameras[0].prompts[0].decider.config();
            let shown = format!("{}", cameras[0].prompts[0].config.decide.threshold);
            (d.threshold, d.off_threshold, shown)
        };
        let near = |a: f32, b: f32| (a - b).abs() < 1e-6;
        // -0 is 0, shown as "0"; off cannot go below 0
        let (on, off, shown) = set(&mut cameras, -0.0);
        assert!(
            on == 0.0 && on.is_sign_positive() && off == 0.0,
            "{on} {off}"
        );
        assert_eq!(shown, "0");
        // back up to 0.3: off sits the configured 0.2 below it again
        let (on, off, _) = set(&mut cameras, 0.3);
        assert!(near(on, 0.3) && near(off, 0.1), "{on} {off}");
        let (on, off, _) = set(&mut cameras, 0.0);
        assert!(on == 0.0 && off == 0.0, "{on} {off}");
        let (on, off, _) = set(&mut cameras, 0.9);
        assert!(near(on, 0.9) && near(off, 0.7), "{on} {off}");
        // a reload takes the file's gap (and thresholds)
        std::fs::write(
            &file.0,
            text.replace("off_threshold = 0.4", "off_threshold = 0.5"),
        )
        .expect("a writable config file");
        reload(&mut cameras, &file.0, &mut Reloads::new());
        let (on, off, _) = set(&mut cameras, 0.3);
        assert!(near(on, 0.3) && near(off, 0.2), "{on} {off}");
    }

    #[test]
    fn models_that_fail_to_load_leave_the_old_prompts_serving() {
        let file = ConfigFile::new("reload-fail");
        file.write("a rocket on the launch pad");
        let mut cameras = prepare(&crate::config::load(&file.0).expect("a valid config"))
            .expect("the tiny models");
        let (tx, rx) = sync_channel(256);
        let mut reloads = Reloads::new();
        reloads.load = Arc::new(|_, _| Err(anyhow::anyhow!("unable to load CLIP: out of memory")));
        file.write("a rocket");
        reload(&mut cameras, &file.0, &mut reloads);
        finish(&mut reloads, &mut cameras, &tx);
        assert_eq!(
            cameras[0].config.prompts[0].text,
            "a rocket on the launch pad"
        );
        for _ in 0..3 {
            analyse(&mut cameras[0], &rocket(), &tx).expect("analysis");
        }
        let events: Vec<Event> = rx.try_iter().collect();
        assert!(
            kinds(&events).contains(&("a_rocket_on_the_launch_pad".into(), EventKind::Start)),
            "{:?}",
            kinds(&events)
        );
    }
}
