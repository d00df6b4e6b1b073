//! Unit tests of `source::http`: URL parsing, credentials and request details.

use super::*;

#[test]
fn credentials_leave_the_url_and_the_description() {
    let t = Target::parse(
        "http://ad%40min:p@ss/w:rd@cam.local:81/stream",
        "http://ad%40min:p@ss/w:rd@cam.local:81/stream",
    )
    .unwrap();
    assert_eq!(t.url, "http://cam.local:81/stream");
    assert_eq!(
        t.authorization.as_deref(),
        // base64 of "ad@min:p@ss/w:rd"
        Some("Basic YWRAbWluOnBAc3MvdzpyZA==")
    );
    assert!(
        !t.shown.contains("p@ss") && !t.shown.contains("rd@"),
        "{}",
        t.shown
    );
    let t = Target::parse("http://cam/mjpeg", "http://cam/mjpeg").unwrap();
    assert_eq!(
        (t.url.as_str(), t.authorization),
        ("http://cam/mjpeg", None)
    );
    for bad in [
        "https://u:secret@cam/x",
        "http://u:secret@/x",
        "ftp://cam/x",
        "http://u:secret@ca m/x",
    ] {
        let e = format!("{:#}", Target::parse(bad, bad).err().unwrap());
        assert!(
            e.starts_with("unable to open camera") && !e.contains("secret"),
            "{bad}: {e}"
        );
    }
    let e = format!(
        "{:#}",
        SnapshotSource::open("http://u:secret@cam/x.jpg", 1.0)
            .err()
            .unwrap()
    );
    assert!(
        e.contains("snapshot+http://") && !e.contains("secret"),
        "{e}"
    );
}
