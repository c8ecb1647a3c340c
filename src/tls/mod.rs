//! TLS: a PEM pair as a rustls server config (here), from files polled for changes
//! (`files.rs`), generated with rcgen for `--tls-self-signed` and `certs` (`generated.rs`), or
//! kept in a Secret by the webhook itself ([`self_managed`]); and who may call
//! ([`client_auth`]).

pub mod client_auth;
mod files;
mod generated;
pub mod self_managed;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

pub use files::{PairReloader, ServingPair, load_files};
pub use generated::{Generated, generate, generate_ca, service_names, sign_leaf, write_dir};

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot write {path}: {source}")]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{what}: no PEM certificate found")]
    NoCertificate { what: String },
    #[error("{what}: no usable PEM private key found")]
    NoKey { what: String },
    #[error("certificate and key do not form a usable pair: {0}")]
    Pair(#[from] rustls::Error),
    #[error("certificate generation failed: {0}")]
    Generate(#[from] rcgen::Error),
    #[error("invalid DNS name or IP {0:?}")]
    Name(String),
    #[error("{what}: not a readable X.509 certificate")]
    Unreadable { what: String },
}

/// The notAfter of the first certificate in `cert_pem`: when the certificate itself expires,
/// whatever any annotation or file name says.
pub fn not_after(cert_pem: &[u8], what: &str) -> Result<SystemTime, TlsError> {
    let der = CertificateDer::pem_slice_iter(cert_pem)
        .next()
        .and_then(Result::ok)
        .ok_or_else(|| TlsError::NoCertificate { what: what.into() })?;
    let unreadable = || TlsError::Unreadable { what: what.into() };
    let (_, cert) = x509_parser::parse_x509_certificate(&der).map_err(|_| unreadable())?;
    let secs = cert.validity().not_after.timestamp();
    let secs = u64::try_from(secs).map_err(|_| unreadable())?;
    Ok(UNIX_EPOCH + Duration::from_secs(secs))
}

/// A client-certificate verifier for the webhook port (`--tls-client-ca-file`); none: any
/// client is served.
pub type ClientVerifier = Option<Arc<dyn rustls::server::danger::ClientCertVerifier>>;

/// A rustls server config from PEM bytes, offering HTTP/2 and HTTP/1.1.
/// Fails if the key does not match the certificate.
pub fn server_config(
    cert_pem: &[u8],
    key_pem: &[u8],
    what: &str,
) -> Result<Arc<rustls::ServerConfig>, TlsError> {
    server_config_with(cert_pem, key_pem, what, None)
}

/// [`server_config`] that also asks clients for a certificate and verifies it with `client`.
pub fn server_config_with(
    cert_pem: &[u8],
    key_pem: &[u8],
    what: &str,
    client: ClientVerifier,
) -> Result<Arc<rustls::ServerConfig>, TlsError> {
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(cert_pem)
        .filter_map(Result::ok)
        .collect();
    if certs.is_empty() {
        return Err(TlsError::NoCertificate {
            what: what.to_string(),
        });
    }
    let key = PrivateKeyDer::from_pem_slice(key_pem).map_err(|_| TlsError::NoKey {
        what: what.to_string(),
    })?;
    let builder = rustls::ServerConfig::builder();
    let builder = match client {
        Some(verifier) => builder.with_client_cert_verifier(verifier),
        None => builder.with_no_client_auth(),
    };
    let mut config = builder.with_single_cert(certs, key)?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_a_certificates_own_expiry() {
        let (ca, _) = generate_ca(Duration::from_secs(86_400)).unwrap();
        let got = not_after(ca.as_bytes(), "ca").unwrap();
        let want = SystemTime::now() + Duration::from_secs(86_400);
        let off = got
            .duration_since(want)
            .or_else(|e| Ok::<_, ()>(e.duration()))
            .unwrap();
        assert!(off < Duration::from_secs(120), "{off:?}");
        for (bad, want) in [
            ("", "no PEM certificate"),
            ("not pem", "no PEM certificate"),
            (
                "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n",
                "not a readable X.509 certificate",
            ),
        ] {
            let e = not_after(bad.as_bytes(), "x").unwrap_err().to_string();
            assert!(e.contains(want), "{bad:?}: {e}");
        }
    }

    #[test]
    fn generated_pair_loads_and_mismatch_is_refused() {
        let names = vec!["localhost".to_string(), "127.0.0.1".to_string()];
        let a = generate(&names, Duration::from_secs(3600)).unwrap();
        server_config(a.cert_pem.as_bytes(), a.key_pem.as_bytes(), "a").unwrap();
        assert!(a.ca_bundle().len() > 100);
        let b = generate(&names, Duration::from_secs(3600)).unwrap();
        let err = server_config(a.cert_pem.as_bytes(), b.key_pem.as_bytes(), "a").unwrap_err();
        assert!(matches!(err, TlsError::Pair(_)), "{err}");
    }

    #[test]
    fn bad_pem_is_refused_with_a_reason() {
        let a = generate(&["localhost".into()], Duration::from_secs(60)).unwrap();
        let cases: &[(&[u8], &[u8], &str)] = &[
            (b"", a.key_pem.as_bytes(), "no PEM certificate"),
            (b"garbage", a.key_pem.as_bytes(), "no PEM certificate"),
            (a.cert_pem.as_bytes(), b"", "no usable PEM private key"),
            (
                a.cert_pem.as_bytes(),
                &a.key_pem.as_bytes()[..a.key_pem.len() / 2],
                "no usable PEM private key",
            ),
        ];
        for (cert, key, want) in cases {
            let err = server_config(cert, key, "x").unwrap_err().to_string();
            assert!(err.contains(want), "{err}");
        }
    }

    #[tokio::test]
    async fn a_renewed_leaf_verifies_against_the_same_ca() {
        let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
        let names = vec!["localhost".to_string()];
        let first = generate(&names, Duration::from_secs(3600)).unwrap();
        let (cert, key) = sign_leaf(&first.ca_key_pem, &names, Duration::from_secs(60)).unwrap();
        assert_ne!(cert, first.cert_pem);
        let server = server_config(cert.as_bytes(), key.as_bytes(), "renewed").unwrap();
        // A client trusting only the original CA completes a handshake with the new leaf.
        let mut roots = rustls::RootCertStore::empty();
        for c in CertificateDer::pem_slice_iter(first.ca_cert_pem.as_bytes()) {
            roots.add(c.unwrap()).unwrap();
        }
        let client = rustls::ClientConfig::builder()
            .with_root_certificates(roots)
            .with_no_client_auth();
        let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
        let mut c = rustls::ClientConnection::new(Arc::new(client), name).unwrap();
        let mut s = rustls::ServerConnection::new(server).unwrap();
        let (mut to_server, mut to_client) = (Vec::new(), Vec::new());
        for _ in 0..10 {
            c.write_tls(&mut to_server).unwrap();
            s.read_tls(&mut &to_server[..]).unwrap();
            to_server.clear();
            s.process_new_packets()
                .expect("server accepts the handshake");
            s.write_tls(&mut to_client).unwrap();
            c.read_tls(&mut &to_client[..]).unwrap();
            to_client.clear();
            c.process_new_packets()
                .expect("client verifies the renewed leaf");
            if !c.is_handshaking() && !s.is_handshaking() {
                return;
            }
        }
        panic!("handshake did not complete");
    }

    #[test]
    fn service_names_cover_cluster_dns() {
        assert_eq!(
            service_names("hook", "ns"),
            [
                "hook",
                "hook.ns",
                "hook.ns.svc",
                "hook.ns.svc.cluster.local"
            ]
        );
    }
}
