//! Unit tests of the multipart (MJPEG) stream parser.

use super::*;

const TWO_PARTS: &[u8] =
    b"--frame\r\nContent-Type: image/jpeg\r\nContent-Length: 5\r\n\r\nAAAAA\r\n\
--frame\r\nContent-Type: image/jpeg\r\n\r\nBB\r\nB\r\n--frame\r\n";

fn bodies(parts: &[Part]) -> Vec<&[u8]> {
    parts.iter().map(|p| p.body.as_slice()).collect()
}

fn feed_all(parser: &mut MultipartParser, chunks: &[&[u8]]) -> Vec<Part> {
    let mut parts = Vec::new();
    for chunk in chunks {
        parts.extend(parser.feed(chunk).unwrap());
    }
    parts
}

fn parse(boundary: Option<&str>, stream: &[u8]) -> (Vec<Part>, MultipartParser) {
    let mut parser = MultipartParser::new(boundary, DEFAULT_MAX_PART);
    let parts = feed_all(&mut parser, &[stream]);
    (parts, parser)
}

#[test]
fn two_parts_split_at_every_offset() {
    let (whole, _) = parse(Some("frame"), TWO_PARTS);
    assert_eq!(bodies(&whole), [&b"AAAAA"[..], b"BB\r\nB"]);
    assert_eq!(whole[0].header("content-length"), Some("5"));
    assert_eq!(whole[1].header("CONTENT-TYPE"), Some("image/jpeg"));
    for i in 0..=TWO_PARTS.len() {
        for j in i..=TWO_PARTS.len() {
            let mut parser = MultipartParser::new(Some("frame"), DEFAULT_MAX_PART);
            let parts = feed_all(
                &mut parser,
                &[&TWO_PARTS[..i], &TWO_PARTS[i..j], &TWO_PARTS[j..]],
            );
            assert_eq!(parts, whole, "split at {i} and {j}");
        }
    }
    let mut parser = MultipartParser::new(Some("frame"), DEFAULT_MAX_PART);
    let bytes: Vec<&[u8]> = TWO_PARTS.chunks(1).collect();
    assert_eq!(feed_all(&mut parser, &bytes), whole);
    assert_eq!(parser.discarded(), 0);
}

#[test]
fn parts_without_content_length_and_bare_line_feeds() {
    let stream =
        b"--myboundary\nContent-Type: image/jpeg\n\nfirst\n--myboundary\n\nsecond\n--myboundary\n";
    // declared with its leading dashes, as some cameras do
    let (parts, _) = parse(Some("--myboundary"), stream);
    assert_eq!(bodies(&parts), [&b"first"[..], b"second"]);
    assert!(parts[1].headers.is_empty());
    // declared without them (RFC 2046), delimiter lines written RFC style with dashes added
    let (parts, _) = parse(Some("myboundary"), stream);
    assert_eq!(bodies(&parts), [&b"first"[..], b"second"]);
    let rfc = b"----foo\r\n\r\none\r\n----foo\r\n\r\ntwo\r\n----foo--\r\n";
    let (parts, parser) = parse(Some("\"--foo\""), rfc);
    assert_eq!(bodies(&parts), [&b"one"[..], b"two"]);
    assert!(parser.finished());
}

#[test]
fn garbage_before_and_between_parts_is_skipped_and_counted() {
    let stream = b"HTTP/1.0 200 OK junk\r\nnoise\r\n--b\r\nContent-Length: 3\r\n\r\nabc\r\nJUNK JUNK\r\n\
\x00\xff\x01 binary--\r\n--b\r\nContent-Length: 3\r\n\r\ndefxyz--b\r\nContent-Length: 2\r\n\r\ngh\r\n";
    let (parts, parser) = parse(Some("b"), stream);
    assert_eq!(bodies(&parts), [&b"abc"[..], b"def", b"gh"]);
    assert!(parser.discarded() >= 30, "{}", parser.discarded());
    // garbage with no line break at all stays bounded
    let mut parser = MultipartParser::new(Some("b"), DEFAULT_MAX_PART);
    for _ in 0..100 {
        assert!(parser.feed(&[b'x'; 1000]).unwrap().is_empty());
    }
    assert!(parser.buf.len() <= MAX_SEEK_LINE + 1000);
    assert_eq!(
        bodies(
            &parser
                .feed(b"\r\n--b\r\nContent-Length: 1\r\n\r\nz")
                .unwrap()
        ),
        [&b"z"[..]]
    );
}

#[test]
fn boundary_is_learned_when_not_declared() {
    let stream = b"\r\n--ffmpeg\r\nContent-type: image/jpeg\r\nContent-length: 4\r\n\r\nJPEG\r\n--ffmpeg\r\n\r\nmore\r\n--ffmpeg\r\n";
    let (parts, parser) = parse(None, stream);
    assert_eq!(bodies(&parts), [&b"JPEG"[..], b"more"]);
    assert_eq!(parser.boundary(), Some(&b"ffmpeg"[..]));
}

#[test]
fn content_type_boundary_parameter() {
    let ct = |s| boundary_from_content_type(s);
    assert_eq!(
        ct("multipart/x-mixed-replace;boundary=ffmpeg").as_deref(),
        Some("ffmpeg")
    );
    assert_eq!(
        ct("multipart/x-mixed-replace; Boundary=\"--myboundary\"").as_deref(),
        Some("--myboundary")
    );
    assert_eq!(
        ct("multipart/x-mixed-replace; charset=x; boundary= 1234 ").as_deref(),
        Some("1234")
    );
    assert_eq!(ct("multipart/x-mixed-replace"), None);
    assert_eq!(ct("image/jpeg; boundary="), None);
}

#[test]
fn lenient_shapes_seen_on_cameras() {
    // the first part without a delimiter, then a delimiter with no line break before it
    let stream = b"Content-Type: image/jpeg\r\n\r\none--x\r\n\xff\xd8two\r\n--x\r\n";
    let (parts, _) = parse(Some("x"), stream);
    assert_eq!(bodies(&parts), [&b"one"[..], b"\xff\xd8two"]);
    // empty parts are left out; a boundary that is a prefix of a longer line is not a delimiter
    let stream = b"--x\r\n--x\r\n\r\n--xy\r\nbody\r\n--x   \r\n";
    let (parts, _) = parse(Some("x"), stream);
    assert_eq!(bodies(&parts), [&b"--xy\r\nbody"[..]]);
}

#[test]
fn closing_delimiter_ends_the_stream() {
    let mut parser = MultipartParser::new(Some("b"), DEFAULT_MAX_PART);
    let parts = parser
        .feed(b"--b\r\n\r\nlast\r\n--b--\r\n--b\r\n\r\nignored\r\n--b\r\n")
        .unwrap();
    assert_eq!(bodies(&parts), [&b"last"[..]]);
    assert!(parser.finished());
    assert!(parser
        .feed(b"--b\r\n\r\nmore\r\n--b\r\n")
        .unwrap()
        .is_empty());
}

#[test]
fn oversized_parts_are_errors() {
    let mut parser = MultipartParser::new(Some("b"), 10);
    let err = parser
        .feed(b"--b\r\nContent-Length: 11\r\n\r\n")
        .unwrap_err();
    assert!(
        format!("{err:#}").contains("exceeds the 10 byte limit"),
        "{err:#}"
    );
    let mut parser = MultipartParser::new(Some("b"), 10);
    parser.feed(b"--b\r\n\r\n").unwrap();
    let err = (0..100)
        .find_map(|_| parser.feed(b"0123456789").err())
        .unwrap();
    assert!(
        format!("{err:#}").contains("exceeds the 10 byte limit"),
        "{err:#}"
    );
    let mut parser = MultipartParser::new(Some("b"), 10);
    parser.feed(b"--b\r\n").unwrap();
    let err = (0..1000)
        .find_map(|_| {
            parser
                .feed(b"X-Long: 0123456789012345678901234567890123456789")
                .err()
        })
        .unwrap();
    assert!(format!("{err:#}").contains("headers exceed"), "{err:#}");
}
