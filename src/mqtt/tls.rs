//! TLS to the broker: the rustls client configuration built from the validated `tls` settings of
//! `[mqtt]` ([`TlsConfig`]: the system's root certificates, or a CA file, a client certificate
//! and key for mutual TLS, or `insecure`), with the `ring` provider chosen explicitly (no
//! process-wide default, no panic when none is installed), and hints for TLS failures.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{anyhow, bail, Context, Result};
use rumqttc::tokio_rustls::rustls::{
    self,
    client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier},
    crypto::CryptoProvider,
    pki_types::{pem::PemObject, CertificateDer, PrivateKeyDer, ServerName, UnixTime},
    ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme,
};

use crate::config::TlsConfig;

/// Where Debian, Fedora/RHEL and Alpine keep the system's CA bundle (`SSL_CERT_FILE` first).
const SYSTEM_BUNDLES: &[&str] = &[
    "/etc/ssl/certs/ca-certificates.crt",
    "/etc/pki/tls/certs/ca-bundle.crt",
    "/etc/ssl/cert.pem",
];

/// Reads the files `tls` names and builds the rustls configuration (TLS 1.2 and 1.3, `ring`).
pub fn client_config(tls: &TlsConfig) -> Result<Arc<ClientConfig>> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .context("unable to set up TLS: the ring provider lacks the default protocol versions")?;
    let builder = if tls.insecure {
        tracing::warn!(
            "mqtt.tls.insecure = true: the broker's certificate is NOT verified, so anyone on the network path can read and \
             change this traffic; name the broker's CA in mqtt.tls.ca_file instead"
        );
        builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(NoVerification(provider)))
    } else {
        let (source, certs) = match &tls.ca_file {
            Some(f) => (f.clone(), read_certs(f, "mqtt.tls.ca_file")?),
            None => system_roots()?,
        };
        let mut roots = RootCertStore::empty();
        let (added, _ignored) = roots.add_parsable_certificates(certs);
        if added == 0 {
            bail!("unable to use {} as CA: it holds no usable certificate; name a PEM file in mqtt.tls.ca_file", source.display());
        }
        builder.with_root_certificates(roots)
    };
    let config = match (&tls.cert_file, &tls.key_file) {
        (Some(cert), Some(key)) => {
            let chain = read_certs(cert, "mqtt.tls.cert_file")?;
            let key = PrivateKeyDer::from_pem_file(key).map_err(|e| {
                anyhow!("unable to read the private key mqtt.tls.key_file {}: {e}; name a PEM key (PKCS#8, PKCS#1 or SEC1) readable by the daemon", key.display())
            })?;
            builder
                .with_client_auth_cert(chain, key)
                .map_err(|e| anyhow!("unable to use the client certificate {} with its key: {e}; check that mqtt.tls.key_file belongs to mqtt.tls.cert_file", cert.display()))?
        }
        _ => builder.with_no_client_auth(),
    };
    Ok(Arc::new(config))
}

/// The PEM certificates in `path` (the config key `key` named it), at least one.
pub(crate) fn read_certs(path: &Path, key: &str) -> Result<Vec<CertificateDer<'static>>> {
    let what = |e: &dyn std::fmt::Display| {
        anyhow!(
            "unable to read {key} {}: {e}; name a PEM certificate file readable by the daemon",
            path.display()
        )
    };
    let certs = CertificateDer::pem_file_iter(path)
        .map_err(|e| what(&e))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| what(&e))?;
    if certs.is_empty() {
        return Err(what(&"no PEM certificate in it"));
    }
    Ok(certs)
}

fn system_roots() -> Result<(PathBuf, Vec<CertificateDer<'static>>)> {
    let env = std::env::var_os("SSL_CERT_FILE").map(PathBuf::from);
    let path = env.into_iter().chain(SYSTEM_BUNDLES.iter().map(PathBuf::from)).find(|p| p.is_file()).ok_or_else(|| {
        anyhow!("unable to find the system's CA certificates (tried SSL_CERT_FILE, {}); install ca-certificates or set mqtt.tls.ca_file", SYSTEM_BUNDLES.join(", "))
    })?;
    let certs = read_certs(&path, "the system CA bundle")?;
    Ok((path, certs))
}

/// `insecure = true`: accepts every certificate, but still checks the handshake signatures
/// (so the session keys belong to whoever presented the certificate).
#[derive(Debug)]
struct NoVerification(Arc<CryptoProvider>);

impl ServerCertVerifier for NoVerification {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

/// A hint for a TLS failure, from the error's text (rustls errors reach us wrapped in I/O
/// errors): None when the error is not about TLS.
pub fn hint(error: &str) -> Option<&'static str> {
    let e = error;
    if e.contains("UnknownIssuer")
        || e.contains("BadSignature")
        || (e.contains("invalid peer certificate") && !e.contains("NotValidForName"))
    {
        Some("the broker's certificate was not trusted: set mqtt.tls.ca_file to the CA certificate that signed it (PEM)")
    } else if e.contains("NotValidForName") {
        Some("the broker's certificate does not name this host: set mqtt.host to a name (or IP address) the certificate lists")
    } else if e.contains("CertificateRequired")
        || e.contains("BadCertificate")
        || e.contains("UnknownCA")
        || e.contains("AccessDenied")
    {
        Some("the broker refused our client certificate: set mqtt.tls.cert_file and key_file to a certificate its CA signed")
    } else if e.contains("InvalidContentType")
        || e.contains("CorruptMessage")
        || e.contains("HandshakeFailure")
    {
        Some("the TLS handshake failed: check that mqtt.port is the broker's TLS listener (usually 8883)")
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_files_are_named() {
        let c = TlsConfig {
            ca_file: Some(PathBuf::from("/nonexistent/ca.pem")),
            ..TlsConfig::default()
        };
        let e = format!("{:#}", client_config(&c).unwrap_err());
        assert!(
            e.contains("mqtt.tls.ca_file") && e.contains("/nonexistent/ca.pem"),
            "{e}"
        );
        let insecure = TlsConfig {
            insecure: true,
            ..TlsConfig::default()
        };
        assert!(client_config(&insecure).is_ok());
    }

    #[test]
    fn hints() {
        assert!(hint("TLS: I/O: invalid peer certificate: UnknownIssuer")
            .unwrap()
            .contains("not trusted"));
        assert!(hint("I/O: received fatal alert: CertificateRequired")
            .unwrap()
            .contains("client certificate"));
        assert_eq!(hint("Connection refused (os error 111)"), None);
    }
}
