//! TLS on the endpoint (`[http] tls_cert`, `tls_key`): the rustls server configuration (TLS 1.2
//! and 1.3, the `ring` provider the MQTT client uses too) built from PEM files, so the token and
//! the lab's pictures do not cross a network in clear. `check` and `run` build it the same way,
//! so a certificate that `check` passes is one `run` serves.

use std::sync::Arc;

use anyhow::{anyhow, Context, Result};
use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::PrivateKeyDer;
use tokio_rustls::rustls::{self, ServerConfig};
use tokio_rustls::TlsAcceptor;

use crate::config::HttpTls;

/// The acceptor for `tls`: its certificate chain and key, checked to belong together.
pub fn acceptor(tls: &HttpTls) -> Result<TlsAcceptor> {
    let chain = crate::mqtt::tls::read_certs(&tls.cert, "http.tls_cert")?;
    let key = PrivateKeyDer::from_pem_file(&tls.key).map_err(|e| {
        anyhow!(
            "unable to read the private key http.tls_key {}: {e}; name a PEM key (PKCS#8, PKCS#1 or SEC1) readable by the daemon",
            tls.key.display()
        )
    })?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .context("unable to set up TLS: the ring provider lacks the default protocol versions")?
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .map_err(|e| {
            anyhow!(
                "unable to serve the certificate {} with the key {}: {e}; check that http.tls_key belongs to http.tls_cert",
                tls.cert.display(),
                tls.key.display()
            )
        })?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(TlsAcceptor::from(Arc::new(config)))
}
