//! Unit tests of the RTSP source.

use super::*;

#[test]
fn credentials_leave_the_url_and_the_description() {
    let s = RtspSource::open("rtsp://ad%40min:p@ss/w:rd@cam.local:554/stream2").unwrap();
    assert_eq!(s.url.as_str(), "rtsp://cam.local:554/stream2");
    assert_eq!(
        s.credentials,
        Some(Credentials {
            username: "ad@min".into(),
            password: "p@ss/w:rd".into()
        })
    );
    assert_eq!(s.describe(), "RTSP rtsp://***@cam.local:554/stream2");
    let s = RtspSource::open("RTSP://cam/live").unwrap();
    assert_eq!((s.url.as_str(), &s.credentials), ("rtsp://cam/live", &None));
    for bad in [
        "rtsp://u:secret@/x",
        "http://u:secret@cam/x",
        "rtsp://u:secret@ca m/x",
    ] {
        let e = format!("{:#}", RtspSource::open(bad).err().unwrap());
        assert!(
            e.starts_with("unable to open camera") && !e.contains("secret"),
            "{bad}: {e}"
        );
    }
}

/// `count` access units of a solid 64x48 colour from openh264's own encoder, a key frame
/// every `key_every` (SPS/PPS inline before each, as retina hands them over).
fn encoded(count: usize, key_every: usize) -> Vec<(Vec<u8>, bool)> {
    use openh264::encoder::Encoder;
    use openh264::formats::{RgbSliceU8, YUVBuffer};
    let rgb: Vec<u8> = (0..64 * 48).flat_map(|_| [224u8, 128, 32]).collect();
    let yuv = YUVBuffer::from_rgb8_source(RgbSliceU8::new(&rgb, (64, 48)));
    let mut encoder = Encoder::new().unwrap();
    (0..count)
        .map(|i| {
            if i % key_every == 0 {
                encoder.force_intra_frame();
            }
            (encoder.encode(&yuv).unwrap().to_vec(), i % key_every == 0)
        })
        .collect()
}

#[test]
fn a_rejected_access_unit_is_skipped_until_the_next_key_frame() {
    let units = encoded(8, 4);
    let mut h264 = H264::new().unwrap();
    // a delta frame before any key frame is passed over, not counted
    assert!(matches!(h264.push(&units[1].0, false), Decoded::Nothing));
    let Decoded::Picture(first) = h264.push(&units[0].0, true) else {
        panic!("the key frame gave no picture")
    };
    assert_eq!(first.dimensions(), (64, 48));
    let p = first.get_pixel(32, 24).0;
    assert!(
        p.iter()
            .zip([224, 128, 32])
            .all(|(&a, b)| (a as i32 - b).abs() < 12),
        "{p:?}"
    );
    // a slice NAL of garbage after a valid start: the decoder rejects it
    let garbage: Vec<u8> = [0, 0, 0, 1, 0x65]
        .into_iter()
        .chain((0..64).map(|i| (i * 37 + 11) as u8))
        .collect();
    let Decoded::Rejected(e) = h264.push(&garbage, true) else {
        panic!("garbage was not rejected")
    };
    eprintln!("garbage: {e:#}");
    assert_eq!(h264.bad_in_a_row, 1);
    // delta frames until the next key frame are passed over, then pictures again
    assert!(matches!(h264.push(&units[2].0, false), Decoded::Nothing));
    assert!(matches!(h264.push(&units[3].0, false), Decoded::Nothing));
    assert!(matches!(h264.push(&units[4].0, true), Decoded::Picture(_)));
    assert!(matches!(h264.push(&units[5].0, false), Decoded::Picture(_)));
    assert_eq!(h264.bad_in_a_row, 0);
}

#[test]
fn a_camera_that_is_not_there_fails_promptly() {
    // nothing listens on port 1 of loopback: DESCRIBE fails at once, without a password leak
    let mut s = RtspSource::open("rtsp://u:hunter2@127.0.0.1:1/x").unwrap();
    let started = std::time::Instant::now();
    let e = format!("{:#}", s.next_frame().unwrap_err());
    assert!(
        e.starts_with("unable to open camera rtsp://***@127.0.0.1:1/x") && !e.contains("hunter2"),
        "{e}"
    );
    assert!(
        started.elapsed() < CONNECT_TIMEOUT,
        "{:?}",
        started.elapsed()
    );
    assert_eq!(s.connects(), 0);
}
