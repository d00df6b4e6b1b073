//! File source: a single image, a directory of images, or a glob — sorted, paced at the
//! camera's fps, optionally looped. For demos, tests and replaying incidents.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use image::RgbImage;

use super::FrameSource;

pub struct FileSource {
    spec: String,
    files: Vec<PathBuf>,
    next: usize,
    looped: bool,
    gap: Duration,
    due: Option<Instant>,
    undecodable: u64,
}

const EXTENSIONS: [&str; 4] = ["jpg", "jpeg", "png", "ppm"];

/// The image files a spec names, sorted: the file itself, a directory's .jpg/.jpeg/.png/.ppm
/// files, or a glob's matches (maybe none).
pub fn image_files(spec: &str) -> Result<Vec<PathBuf>> {
    let path = Path::new(spec);
    let mut files: Vec<PathBuf> = if path.is_dir() {
        std::fs::read_dir(path)
            .with_context(|| format!("unable to list {spec}"))?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| {
                p.extension()
                    .and_then(|e| e.to_str())
                    .is_some_and(|e| EXTENSIONS.contains(&e.to_ascii_lowercase().as_str()))
            })
            .collect()
    } else if path.is_file() {
        vec![path.to_path_buf()]
    } else {
        glob::glob(spec)
            .with_context(|| {
                format!("unable to use {spec:?}: not a file, a directory or a valid glob")
            })?
            .filter_map(|p| p.ok())
            .collect()
    };
    files.sort();
    Ok(files)
}

impl FileSource {
    pub fn open(spec: &str, fps: f64, looped: bool) -> Result<FileSource> {
        let files = image_files(spec)?;
        if files.is_empty() {
            bail!(
                "unable to open source {spec:?}: no image files found there (looked for {})",
                EXTENSIONS.join(", ")
            );
        }
        Ok(FileSource {
            spec: spec.to_string(),
            files,
            next: 0,
            looped,
            gap: Duration::from_secs_f64(1.0 / fps.max(0.001)),
            due: None,
            undecodable: 0,
        })
    }
}

impl FrameSource for FileSource {
    /// The next image, paced; an unreadable or corrupt file is skipped and counted.
    fn next_frame(&mut self) -> Result<Option<RgbImage>> {
        for _ in 0..self.files.len() {
            if self.next >= self.files.len() {
                if !self.looped {
                    return Ok(None);
                }
                self.next = 0;
            }
            let path = &self.files[self.next];
            self.next += 1;
            match crate::decode::read_image(path) {
                Ok(img) => {
                    if let Some(due) = self.due {
                        let now = Instant::now();
                        if due > now {
                            std::thread::sleep(due - now);
                        }
                    }
                    self.due = Some(Instant::now() + self.gap);
                    return Ok(Some(img));
                }
                Err(e) => {
                    self.undecodable += 1;
                    tracing::warn!("skipping {}: {e:#}", path.display());
                }
            }
        }
        anyhow::bail!(
            "unable to read any image of source {:?}: every file failed to decode",
            self.spec
        )
    }

    fn undecodable(&self) -> u64 {
        self.undecodable
    }

    fn describe(&self) -> String {
        format!("files {} ({} images)", self.spec, self.files.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Files go through the hardened decoder: a JPEG cut off mid-scan is skipped and counted,
    /// not played as a grey-filled frame.
    #[test]
    fn a_truncated_file_is_skipped_and_counted() {
        let dir = std::env::temp_dir().join(format!("promptcam-files-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let image = RgbImage::from_fn(64, 48, |x, y| image::Rgb([(x * 4) as u8, (y * 5) as u8, 9]));
        let mut jpeg = Vec::new();
        image::codecs::jpeg::JpegEncoder::new_with_quality(&mut jpeg, 90)
            .encode_image(&image)
            .unwrap();
        std::fs::write(dir.join("a-cut.jpg"), &jpeg[..jpeg.len() * 3 / 4]).unwrap();
        std::fs::write(dir.join("b-whole.jpg"), &jpeg).unwrap();
        let mut source = FileSource::open(dir.to_str().unwrap(), 1000.0, false).unwrap();
        let frame = source.next_frame();
        let _ = std::fs::remove_dir_all(&dir);
        assert_eq!(frame.unwrap().map(|f| f.dimensions()), Some((64, 48)));
        assert_eq!(source.undecodable(), 1);
        assert!(source.next_frame().unwrap().is_none());
    }
}
