//! Decode: the one image reader. Camera bytes (MJPEG parts, snapshots, V4L2's MJPEG) and image
//! files (the file source, the command line, the benches) become RGB pixels the same way: JPEG
//! or PNG by their magic bytes, a JPEG cut off mid-transfer refused (the decoder would fill it
//! with grey), a decoder panic on hostile bytes caught, and transparency composited onto white
//! as transformers' `convert_to_rgb` does ([`to_rgb`]).

use std::path::Path;

use anyhow::{anyhow, Context, Result};
use image::RgbImage;

/// Decodes a camera frame: JPEG, or PNG when the bytes start with the PNG signature, converted
/// to RGB by [`to_rgb`]. Truncated or corrupt bytes give an error ("unable to decode frame:
/// ..."), never a panic.
pub fn decode_image(bytes: &[u8]) -> Result<RgbImage> {
    decode(bytes).map_err(|why| anyhow!("unable to decode frame: {why}"))
}

/// Checks, without decoding, that camera bytes are a whole picture [`decode_image`] may decode:
/// a PNG signature, or a JPEG start-of-image marker with an end-of-image marker after its last
/// scan. What passes may still fail to decode (corrupt data inside); what fails never would.
pub fn check_image(bytes: &[u8]) -> Result<()> {
    if bytes.starts_with(PNG_SIGNATURE) {
        return Ok(());
    }
    if !bytes.starts_with(&[0xFF, 0xD8]) {
        return Err(anyhow!(
            "unable to decode frame: neither JPEG nor PNG ({} bytes)",
            bytes.len()
        ));
    }
    if !jpeg_has_end_of_image(bytes) {
        return Err(anyhow!(
            "unable to decode frame: JPEG truncated ({} bytes, no end-of-image marker)",
            bytes.len()
        ));
    }
    Ok(())
}

/// Reads and decodes an image file as [`decode_image`] decodes a frame.
pub fn read_image(path: &Path) -> Result<RgbImage> {
    let bytes =
        std::fs::read(path).with_context(|| format!("unable to open image {}", path.display()))?;
    decode(&bytes).map_err(|why| {
        anyhow!(
            "unable to decode image {}: {why}; pass a JPEG or PNG file",
            path.display()
        )
    })
}

const PNG_SIGNATURE: &[u8] = b"\x89PNG\r\n\x1a\n";

/// The decoder behind both: the pixels, or why not.
fn decode(bytes: &[u8]) -> Result<RgbImage, String> {
    let format = if bytes.starts_with(PNG_SIGNATURE) {
        image::ImageFormat::Png
    } else {
        image::ImageFormat::Jpeg
    };
    if format == image::ImageFormat::Jpeg
        && bytes.starts_with(&[0xFF, 0xD8])
        && !jpeg_has_end_of_image(bytes)
    {
        // The JPEG decoder fills a cut-off scan with grey instead of failing; a frame cut off
        // mid-transfer would then look like sudden motion.
        return Err(format!(
            "JPEG truncated ({} bytes, no end-of-image marker)",
            bytes.len()
        ));
    }
    // The decoders report bad input as errors; the unwind guard only keeps a decoder bug on
    // hostile bytes from taking the calling thread down.
    let decoded = std::panic::catch_unwind(|| image::load_from_memory_with_format(bytes, format))
        .map_err(|_| format!("{format:?} decoder panicked on {} bytes", bytes.len()))?
        .map_err(|e| format!("{e} ({format:?}, {} bytes)", bytes.len()))?;
    Ok(to_rgb(decoded))
}

/// Whether an end-of-image marker (FF D9) follows the start of the last scan (FF DA). Inside
/// entropy-coded data every FF byte is followed by 00 or a restart marker, so neither marker
/// appears by accident; an embedded EXIF thumbnail ends before the main image's scans, and bytes
/// some cameras append after the end marker are tolerated.
fn jpeg_has_end_of_image(bytes: &[u8]) -> bool {
    let last_scan = bytes.windows(2).rposition(|w| w == [0xFF, 0xDA]);
    last_scan.is_some_and(|start| bytes[start..].windows(2).any(|w| w == [0xFF, 0xD9]))
}

/// Converts any decoded image to RGB as transformers' `convert_to_rgb` does (the processors' first
/// step): an image with transparency (RGBA, grayscale + alpha, and palette or colour-key PNGs,
/// whose tRNS chunk the PNG decoder expands into alpha) is composited onto opaque white; without
/// it, grayscale is replicated and 16-bit samples are scaled to 8 bits.
pub fn to_rgb(image: image::DynamicImage) -> RgbImage {
    match image {
        image::DynamicImage::ImageRgb8(rgb) => rgb,
        other if other.color().has_alpha() => {
            let rgba = other.into_rgba8();
            let (w, h) = rgba.dimensions();
            let raw: Vec<u8> = rgba
                .into_raw()
                .chunks_exact(4)
                .flat_map(|p| [p[0], p[1], p[2]].map(|c| over_white(c, p[3])))
                .collect();
            RgbImage::from_raw(w, h, raw).unwrap_or_default()
        }
        other => other.to_rgb8(),
    }
}

/// One 8-bit sample of colour `c` with alpha `a` composited onto white: PIL's `alpha_composite`
/// of the image over an opaque white background (what `convert_to_rgb` does), which with an
/// opaque background reduces to round((c * a + 255 * (255 - a)) / 255).
fn over_white(c: u8, a: u8) -> u8 {
    let (c, a) = (c as u32, a as u32);
    ((c * a + 255 * (255 - a) + 127) / 255) as u8
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A textured picture, so that most of the JPEG is scan data.
    fn jpeg_bytes(width: u32, height: u32) -> Vec<u8> {
        let image = RgbImage::from_fn(width, height, |x, y| {
            image::Rgb([((x * 7) ^ (y * 3)) as u8, (y * 5) as u8, (x ^ y) as u8])
        });
        let mut out = Vec::new();
        image::codecs::jpeg::JpegEncoder::new_with_quality(&mut out, 90)
            .encode_image(&image)
            .unwrap();
        out
    }

    #[test]
    fn decode_jpeg_gives_the_right_size() {
        let decoded = decode_image(&jpeg_bytes(160, 120)).unwrap();
        assert_eq!(decoded.dimensions(), (160, 120));
        // padding some cameras send after the end-of-image marker is fine
        let mut padded = jpeg_bytes(48, 32);
        padded.extend_from_slice(&[0, 0, 0, 0, b'\r', b'\n']);
        assert_eq!(decode_image(&padded).unwrap().dimensions(), (48, 32));
    }

    #[test]
    fn decode_png_by_magic_bytes() {
        let image = RgbImage::from_pixel(5, 7, image::Rgb([1, 2, 3]));
        let mut out = std::io::Cursor::new(Vec::new());
        image.write_to(&mut out, image::ImageFormat::Png).unwrap();
        let decoded = decode_image(out.get_ref()).unwrap();
        assert_eq!(decoded.dimensions(), (5, 7));
        assert_eq!(decoded.get_pixel(2, 3).0, [1, 2, 3]);
        let bytes = out.into_inner();
        assert!(decode_image(&bytes[..bytes.len() / 2]).is_err());
    }

    #[test]
    fn truncated_jpeg_is_an_error() {
        // the decoder itself accepts a scan cut short, so every cut must be caught
        let bytes = jpeg_bytes(160, 120);
        for cut in [
            bytes.len() / 2,
            bytes.len() * 3 / 4,
            bytes.len() - 2,
            400,
            100,
            2,
        ] {
            let err = decode_image(&bytes[..cut]).unwrap_err();
            assert!(
                format!("{err:#}").contains("unable to decode frame"),
                "cut {cut}: {err:#}"
            );
        }
    }

    #[test]
    fn the_check_passes_whole_pictures_and_refuses_what_would_never_decode() {
        let bytes = jpeg_bytes(160, 120);
        check_image(&bytes).unwrap();
        for cut in [bytes.len() / 2, bytes.len() - 2, 100, 2, 0] {
            let e = format!("{:#}", check_image(&bytes[..cut]).unwrap_err());
            assert!(e.contains("unable to decode frame"), "cut {cut}: {e}");
        }
        let e = format!(
            "{:#}",
            check_image(b"<html>not a picture</html>").unwrap_err()
        );
        assert!(e.contains("neither JPEG nor PNG"), "{e}");
        let mut png = std::io::Cursor::new(Vec::new());
        RgbImage::new(3, 2)
            .write_to(&mut png, image::ImageFormat::Png)
            .unwrap();
        check_image(png.get_ref()).unwrap();
        // the check is cheap, not a decode: a whole JPEG whose header is garbage passes it and
        // fails later, when the frame is decoded
        let mut corrupt = vec![0xFF, 0xD8];
        corrupt.extend((0..500u32).map(|i| (i * 37 % 251) as u8));
        corrupt.extend([0xFF, 0xDA, 1, 2, 3, 0xFF, 0xD9]);
        check_image(&corrupt).unwrap();
        assert!(decode_image(&corrupt).is_err());
    }

    #[test]
    fn garbage_is_an_error() {
        let garbage: Vec<u8> = (0..1000u32).map(|i| (i * 37 % 251) as u8).collect();
        let err = decode_image(&garbage).unwrap_err();
        assert!(
            format!("{err:#}").contains("unable to decode frame"),
            "{err:#}"
        );
        assert!(decode_image(&[]).is_err());
    }

    #[test]
    fn files_are_read_through_the_same_decoder() {
        let dir = std::env::temp_dir().join(format!("promptcam-decode-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let bytes = jpeg_bytes(64, 48);
        let whole = dir.join("whole.jpg");
        std::fs::write(&whole, &bytes).unwrap();
        assert_eq!(read_image(&whole).unwrap().dimensions(), (64, 48));
        // a file cut off mid-scan is refused like a frame, not filled with grey
        let cut = dir.join("cut.jpg");
        std::fs::write(&cut, &bytes[..bytes.len() * 3 / 4]).unwrap();
        let e = format!("{:#}", read_image(&cut).unwrap_err());
        let _ = std::fs::remove_dir_all(&dir);
        assert!(
            e.contains("cut.jpg") && e.contains("truncated") && e.contains("JPEG or PNG"),
            "{e}"
        );
    }

    #[test]
    fn transparency_is_composited_onto_white() {
        // values from transformers' convert_to_rgb (PIL's alpha_composite over white)
        let rgba = image::RgbaImage::from_raw(
            4,
            1,
            vec![
                10, 20, 30, 0, // transparent: white
                10, 20, 30, 255, // opaque: unchanged
                10, 20, 30, 200, // 200/255 of the colour, the rest white
                0, 128, 255, 128,
            ],
        )
        .unwrap();
        let rgb = to_rgb(image::DynamicImage::ImageRgba8(rgba));
        assert_eq!(
            rgb.into_raw(),
            [255, 255, 255, 10, 20, 30, 63, 71, 79, 127, 191, 255]
        );
        // grayscale + alpha the same way, the gray replicated
        let la = image::GrayAlphaImage::from_raw(2, 1, vec![40, 200, 40, 0]).unwrap();
        let rgb = to_rgb(image::DynamicImage::ImageLumaA8(la));
        assert_eq!(rgb.into_raw(), [86, 86, 86, 255, 255, 255]);
    }
}
