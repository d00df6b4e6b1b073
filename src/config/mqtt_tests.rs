//! The `[mqtt]` table's unit tests: defaults, errors that name the key (and, in a whole file, the
//! line), TLS settings, and passwords that never show.

use std::path::{Path, PathBuf};

use anyhow::Result;

use super::super::SEE;
use super::{parse_mqtt, MqttConfig, TlsConfig};

fn parse(text: &str) -> Result<MqttConfig> {
    parse_mqtt(text, Path::new("/etc/promptcam/promptcam.toml"))
}

fn parse_tls(text: &str) -> Result<Option<TlsConfig>> {
    parse(&format!("host = \"b\"\n{text}")).map(|c| c.tls)
}

#[test]
fn defaults_and_errors() {
    let c = parse("host = \"broker\"").unwrap();
    assert_eq!(
        (c.port, c.topic_prefix.as_str(), c.discovery_prefix.as_str()),
        (1883, "promptcam", "homeassistant")
    );
    assert_eq!(c.spool_dir, PathBuf::from("/var/lib/promptcam/spool"));
    assert_eq!(c.spool_max_events, 10_000);
    let e = parse("host = \"b\"\nhots = 1").unwrap_err().to_string();
    assert!(e.contains("mqtt.hots") && e.contains(SEE), "{e}");
    let e = parse("host = \"b\"\nport = \"x\"").unwrap_err().to_string();
    assert!(e.contains("mqtt.port") && e.contains(SEE), "{e}");
    let e = parse("host = \"b\"\nusername = \"u\"\npassword = \"hunter2\"\npassword_file = \"p\"")
        .unwrap_err()
        .to_string();
    assert!(!e.contains("hunter2"), "{e}");
    let c = parse("host = \"b\"\nusername = \"u\"\npassword = \"hunter2\"").unwrap();
    assert!(!format!("{c:?}").contains("hunter2"));
    let c = parse("host = \"b\"\nspool_dir = \"spool\"").unwrap();
    assert_eq!(c.spool_dir, PathBuf::from("/etc/promptcam/spool"));
}

#[test]
fn password_file_is_read_and_never_shown() {
    let dir = std::env::temp_dir().join(format!("promptcam-mqtt-pw-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("pw"), "s3cret-pw\n").unwrap();
    let text = "host = \"b\"\nusername = \"u\"\npassword_file = \"pw\"";
    let c = parse_mqtt(text, &dir.join("promptcam.toml")).unwrap();
    assert_eq!(c.password.as_ref().map(|p| p.expose()), Some("s3cret-pw"));
    let text = "host = \"b\"\nusername = \"u\"\npassword_file = \"missing\"";
    let e = format!(
        "{:#}",
        parse_mqtt(text, &dir.join("promptcam.toml")).unwrap_err()
    );
    assert!(
        e.contains("mqtt.password_file") && e.contains("missing"),
        "{e}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn tls_parses_bool_and_table() {
    assert_eq!(parse_tls("tls = false").unwrap(), None);
    assert_eq!(parse_tls("tls = true").unwrap(), Some(TlsConfig::default()));
    let c = parse_tls("[tls]\nca_file = \"ca.pem\"\ncert_file = \"c.pem\"\nkey_file = \"/k.pem\"")
        .unwrap()
        .unwrap();
    assert_eq!(c.ca_file, Some(PathBuf::from("/etc/promptcam/ca.pem")));
    assert_eq!(c.key_file, Some(PathBuf::from("/k.pem")));
    assert!(!c.insecure);
    let e = parse_tls("[tls]\ncert_file = \"c.pem\"")
        .unwrap_err()
        .to_string();
    assert!(e.contains("mqtt.tls.key_file"), "{e}");
    let e = parse_tls("[tls]\ninsecure = true\nca_file = \"ca.pem\"")
        .unwrap_err()
        .to_string();
    assert!(e.contains("mqtt.tls.insecure"), "{e}");
    let e = parse_tls("[tls]\ncafile = \"ca.pem\"")
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("mqtt.tls.cafile") && e.contains("ca_file"),
        "{e}"
    );
    let e = parse_tls("tls = 1").unwrap_err().to_string();
    assert!(e.contains("mqtt.tls"), "{e}");
    // TLS moves the default port
    let c = parse("host = \"b\"\ntls = true").unwrap();
    assert_eq!(c.port, 8883);
}

/// In a whole file, `[mqtt]` errors name the key, the line and the column like every other
/// table's, and the file is refused before anything else happens.
#[test]
fn errors_in_a_config_file_name_the_line() {
    let base = "[models.clip]\ndir = \"models/tiny/clip\"\n\n[[cameras]]\nname = \"Driveway\"\nsource = \"tests/fixtures/images\"\n\n[[cameras.prompts]]\ntext = \"a van\"\nmodel = \"clip\"\nnegatives = [\"a road\"]\n\n[mqtt]\nhost = \"localhost\"\n";
    let cases: &[(&str, &[&str])] = &[
        (
            "port = \"not a number\"",
            &["`mqtt.port`", "line 15, column 8", "expected an integer"],
        ),
        ("port = 0", &["`mqtt.port`", "line 15", "1..=65535"]),
        ("prot = 1883", &["`mqtt.prot`", "line 15, column 1", "port"]),
        (
            "topic_prefix = \"a/#\"",
            &["`mqtt.topic_prefix`", "line 15"],
        ),
        (
            "diagnostics_interval = 0.5",
            &["`mqtt.diagnostics_interval`", "line 15", "1..=3600"],
        ),
        (
            "\n[mqtt.tls]\nca_file = 5",
            &["`mqtt.tls.ca_file`", "line 17"],
        ),
        ("\n[mqtt.tls]\nkey = \"k\"", &["`mqtt.tls.key`", "line 17"]),
        (
            "tls = \"yes\"",
            &["`mqtt.tls`", "line 15", "true, false or a"],
        ),
    ];
    for (extra, needles) in cases {
        let text = format!("{base}{extra}\n");
        let e = format!(
            "{:#}",
            super::super::parse(&text, Path::new("t.toml")).expect_err(extra)
        );
        for n in *needles {
            assert!(e.contains(n), "{extra}: expected {n:?} in: {e}");
        }
        assert!(e.contains(SEE), "{e}");
    }
    let e = format!(
        "{:#}",
        super::super::parse(
            &base.replace("host = \"localhost\"\n", "port = 1883\n"),
            Path::new("t.toml")
        )
        .unwrap_err()
    );
    assert!(e.contains("`mqtt.host`") && e.contains("line 13"), "{e}");
    let c = super::super::parse(base, Path::new("t.toml")).unwrap();
    assert_eq!(
        c.mqtt.map(|m| (m.host, m.port)),
        Some(("localhost".into(), 1883))
    );
}

/// A password of the wrong type is not quoted back, nor the line it is on.
#[test]
fn a_password_of_the_wrong_type_is_not_shown() {
    let e = parse("host = \"b\"\nusername = \"u\"\npassword = 73194628")
        .unwrap_err()
        .to_string();
    assert!(e.contains("mqtt.password") && e.contains("line 3"), "{e}");
    assert!(!e.contains("73194628"), "{e}");
}
