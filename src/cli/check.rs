//! `promptcam check`: validates a config file the way `run` would start it — the file, the
//! models (loaded), every camera's source (parsed, listed or looked up, never connected to), the
//! MQTT spool directory and the history's (writable, or creatable) — so that what `check`
//! passes, `run` starts whole (a history that cannot open only degrades `run`; `check` refuses it).
//! It prints nothing (no "valid") unless every check passed, and loads no model for a file that
//! does not validate.

use std::path::Path;

use anyhow::{bail, Context, Result};

pub fn check(path: &Path) -> Result<()> {
    // the whole file first (every table, [mqtt] included), then what is cheap to look at, and
    // only then the models: nothing is printed until everything passed
    let config = crate::config::load(path)?;
    if let Some(m) = &config.mqtt {
        spool_dir_usable(&m.spool_dir)?;
    }
    if let Some(tls) = config.http.as_ref().and_then(|h| h.tls.as_ref()) {
        crate::endpoint::tls::acceptor(tls)?;
    }
    if let Some(h) = &config.history {
        dir_usable(
            &h.dir,
            "the history directory",
            "set history.path to a directory the daemon can write (`run` would start without the history)",
        )?;
    }
    // the run-time prompts saved in the state directory, as `run` would bring them back
    let (entries, problems) = crate::runtime::read(&config, std::time::SystemTime::now());
    if !problems.is_empty() {
        bail!(
            "run-time prompts that `run` would drop:\n  {}\nremove them (MQTT `prompts/remove`), or delete their file in {}",
            problems.join("\n  "),
            config.state_dir().join(crate::runtime::file::DIR).display()
        );
    }
    let mut running = config.clone();
    crate::runtime::merge(&entries, &mut running);
    let (towers, cameras) =
        crate::daemon::prepare(&running, &crate::pipeline::start_cache::StartCache::off())?;
    let mut report = vec![format!("{}: valid", path.display())];
    for (kind, mc) in &config.models {
        let mut files: Vec<String> = std::fs::read_dir(mc.dir.join("onnx"))
            .map(|d| {
                d.filter_map(|e| e.ok())
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .filter(|n| n.ends_with(".onnx"))
                    .collect()
            })
            .unwrap_or_default();
        files.sort();
        let runs = match towers.precision(*kind) {
            Some(p) => format!("{} ({:?})", p.name(), mc.precision),
            None => format!("{:?}, not loaded: no prompt uses it", mc.precision),
        };
        report.push(format!(
            "  model {kind}: {} ({runs}) present and loads; onnx/: {}",
            mc.dir.display(),
            files.join(", ")
        ));
    }
    if let Some(id) = towers.clip_identity() {
        report.push(format!(
            "  CLIP embeddings by model {id} (marks and learned prompts must come from it)"
        ));
    }
    for cam in &cameras {
        let c = &cam.config;
        // the same checks `run` makes when it opens the source, short of connecting
        let source = crate::source::check(&c.source, c.fps, c.looped)
            .with_context(|| format!("unable to open the source of camera {:?}", c.name))?;
        let runtime = entries.iter().filter(|e| e.camera == c.id).count();
        report.push(format!(
            "  camera {} ({}): {} prompt(s){}, source {source}",
            c.id,
            c.name,
            c.prompts.len(),
            match runtime {
                0 => String::new(),
                n => format!(" ({n} added at run time)"),
            }
        ));
    }
    report.push(match &config.mqtt {
        None => "  no [mqtt] table: events go to stdout as JSON lines".to_string(),
        Some(m) => format!(
            "  mqtt: broker {}:{} (not contacted by check), spool {}",
            m.host,
            m.port,
            m.spool_dir.display()
        ),
    });
    println!("{}", report.join("\n"));
    Ok(())
}

/// The MQTT spool directory as the publisher needs it: a directory the daemon can write, or a
/// path it can create (its nearest existing ancestor is such a directory). Creates nothing.
fn spool_dir_usable(dir: &Path) -> Result<()> {
    dir_usable(
        dir,
        "the MQTT spool directory",
        "set mqtt.spool_dir to a directory the daemon can write",
    )
}

/// `dir` can be written, or made (its nearest existing ancestor is a writable directory).
fn dir_usable(dir: &Path, what: &str, hint: &str) -> Result<()> {
    let mut at = dir;
    loop {
        match std::fs::metadata(at) {
            Ok(m) if m.is_dir() => {
                let c =
                    std::ffi::CString::new(std::os::unix::ffi::OsStrExt::as_bytes(at.as_os_str()))
                        .context("a path with a NUL byte")?;
                // SAFETY: access reads the NUL-terminated path only
                if unsafe { libc::access(c.as_ptr(), libc::W_OK | libc::X_OK) } != 0 {
                    let e = std::io::Error::last_os_error();
                    bail!(
                        "unable to use {what} {}: {} is not writable ({e}); {hint}",
                        dir.display(),
                        at.display()
                    );
                }
                return Ok(());
            }
            Ok(_) => bail!(
                "unable to use {what} {}: {} is not a directory; {hint}",
                dir.display(),
                at.display()
            ),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => match at.parent() {
                Some(parent) if parent.as_os_str().is_empty() => at = Path::new("."),
                Some(parent) => at = parent,
                None => return Ok(()),
            },
            Err(e) => bail!("unable to use {what} {}: {e}; {hint}", dir.display()),
        }
    }
}
