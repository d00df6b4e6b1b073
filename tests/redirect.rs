//! Redirects of a camera's URL against loopback servers: the basic-auth credentials follow a
//! redirect to the same origin (a camera that moves its snapshot path answers 200, not 401
//! forever), and never go to another origin (another port or another host name).

use std::io::{BufReader, Write};
use std::net::TcpListener;
use std::sync::{Arc, Mutex};

use promptcam::source::http::SnapshotSource;
use promptcam::source::FrameSource;

/// "user:hunter2" in base64.
const AUTH: &str = "Basic dXNlcjpodW50ZXIy";

fn jpeg() -> Vec<u8> {
    let img = image::RgbImage::from_pixel(32, 24, image::Rgb([200, 40, 40]));
    let mut out = vec![];
    image::codecs::jpeg::JpegEncoder::new_with_quality(&mut out, 90)
        .encode_image(&img)
        .unwrap();
    out
}

/// A loopback HTTP server that records each request head and answers it with `answer`.
struct Server {
    port: u16,
    heads: Arc<Mutex<Vec<String>>>,
}

impl Server {
    fn start(answer: impl Fn(&str, u16) -> (String, Vec<u8>) + Send + Sync + 'static) -> Server {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let heads = Arc::new(Mutex::new(vec![]));
        let seen = heads.clone();
        let answer = Arc::new(answer);
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(mut s) = stream else { return };
                let (seen, answer) = (seen.clone(), answer.clone());
                // a thread per connection: the client keeps connections alive in its pool
                std::thread::spawn(move || {
                    let mut reader = BufReader::new(s.try_clone().unwrap());
                    while let Some(head) = crate::fixture::read_request(&mut reader) {
                        seen.lock().unwrap().push(head.clone());
                        let (status, body) = answer(&head, port);
                        let reply = format!(
                            "HTTP/1.1 {status}\r\nContent-Length: {}\r\nContent-Type: image/jpeg\r\n\r\n",
                            body.len()
                        );
                        if s.write_all(reply.as_bytes())
                            .and_then(|_| s.write_all(&body))
                            .is_err()
                        {
                            break;
                        }
                    }
                });
            }
        });
        Server { port, heads }
    }

    fn heads(&self) -> Vec<String> {
        self.heads.lock().unwrap().clone()
    }
}

fn authorized(head: &str) -> bool {
    head.lines()
        .any(|l| l.to_ascii_lowercase() == format!("authorization: {}", AUTH.to_ascii_lowercase()))
}

/// 200 with the picture when the request carries the credentials, else 401.
fn picture(head: &str) -> (String, Vec<u8>) {
    if authorized(head) {
        ("200 OK".into(), jpeg())
    } else {
        (
            "401 Unauthorized\r\nWWW-Authenticate: Basic realm=\"cam\"".into(),
            vec![],
        )
    }
}

#[test]
fn credentials_follow_redirects_to_the_same_origin_only() {
    let other = Server::start(|head, _| picture(head));
    let other_port = other.port;
    let camera = Server::start(move |head, port| {
        let path = head.split_whitespace().nth(1).unwrap_or("").to_string();
        let moved = |to: String| (format!("302 Found\r\nLocation: {to}"), vec![]);
        match path.as_str() {
            "/snap.jpg" => moved("/cgi-bin/snapshot.jpg".into()),
            "/absolute.jpg" => moved(format!("http://127.0.0.1:{port}/cgi-bin/snapshot.jpg")),
            "/other-port.jpg" => moved(format!("http://127.0.0.1:{other_port}/snap.jpg")),
            "/other-host.jpg" => moved(format!("http://localhost:{port}/cgi-bin/snapshot.jpg")),
            "/loop.jpg" => moved("/loop.jpg".into()),
            "/cgi-bin/snapshot.jpg" => picture(head),
            _ => ("404 Not Found".into(), vec![]),
        }
    });
    let source = |path: &str| {
        SnapshotSource::open(
            &format!(
                "snapshot+http://user:hunter2@127.0.0.1:{}{path}",
                camera.port
            ),
            100.0,
        )
        .unwrap()
    };

    // a relative and an absolute redirect on the same origin keep the credentials
    for path in ["/snap.jpg", "/absolute.jpg"] {
        let frame = source(path).next_frame();
        assert!(
            matches!(&frame, Ok(Some(img)) if img.dimensions() == (32, 24)),
            "{path}: {frame:?}"
        );
    }
    let heads = camera.heads();
    let last = heads.last().unwrap();
    assert!(
        last.starts_with("GET /cgi-bin/snapshot.jpg") && authorized(last),
        "{heads:?}"
    );

    // another port, another host name: the credentials stay behind, so the camera says 401
    for (path, seen_by) in [("/other-port.jpg", &other), ("/other-host.jpg", &camera)] {
        let e = format!("{:#}", source(path).next_frame().expect_err("a 401"));
        assert!(e.contains("401") && !e.contains("hunter2"), "{path}: {e}");
        let last = seen_by.heads().last().cloned().unwrap();
        assert!(
            !last.to_ascii_lowercase().contains("authorization"),
            "{path}: credentials leaked to another origin: {last}"
        );
    }

    // a redirect loop ends with an error, not a hang
    let e = format!("{:#}", source("/loop.jpg").next_frame().err().unwrap());
    assert!(e.contains("redirects"), "{e}");
}
