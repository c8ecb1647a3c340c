//! TLS: loading a PEM pair into a rustls server config, and generating a CA and serving
//! certificate with rcgen (for `--tls-self-signed` and `ecr-token-webhook certs`).

pub mod client_auth;
pub mod self_managed;

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, SanType,
};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

use crate::reload::{Poll, Source};

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

/// Reads and validates a PEM certificate chain and key from files.
pub fn load_files(cert: &Path, key: &Path) -> Result<Arc<rustls::ServerConfig>, TlsError> {
    load_files_with(cert, key, None)
}

/// [`load_files`] with a client-certificate verifier (see [`server_config_with`]).
pub fn load_files_with(
    cert: &Path,
    key: &Path,
    client: ClientVerifier,
) -> Result<Arc<rustls::ServerConfig>, TlsError> {
    let read = |p: &Path| {
        std::fs::read(p).map_err(|source| TlsError::Read {
            path: p.to_path_buf(),
            source,
        })
    };
    let (cert_pem, key_pem) = (read(cert)?, read(key)?);
    server_config_with(&cert_pem, &key_pem, &cert.display().to_string(), client)
}

/// A CA and a serving certificate it signed, all PEM.
pub struct Generated {
    pub ca_cert_pem: String,
    pub ca_key_pem: String,
    pub cert_pem: String,
    pub key_pem: String,
}

impl Generated {
    /// The CA as a webhook configuration's `caBundle`: base64 of the PEM.
    pub fn ca_bundle(&self) -> String {
        use base64::Engine;
        base64::engine::general_purpose::STANDARD.encode(&self.ca_cert_pem)
    }
}

/// The DNS names a webhook Service answers to.
pub fn service_names(service: &str, namespace: &str) -> Vec<String> {
    vec![
        service.to_string(),
        format!("{service}.{namespace}"),
        format!("{service}.{namespace}.svc"),
        format!("{service}.{namespace}.svc.cluster.local"),
    ]
}

/// Generates a CA and a serving certificate for `names` (DNS names or IP addresses), both
/// valid for `validity`.
pub fn generate(names: &[String], validity: Duration) -> Result<Generated, TlsError> {
    let (ca_cert_pem, ca_key_pem) = generate_ca(validity)?;
    let (cert_pem, key_pem) = sign_leaf(&ca_key_pem, names, validity)?;
    Ok(Generated {
        ca_cert_pem,
        ca_key_pem,
        cert_pem,
        key_pem,
    })
}

fn validity_window(validity: Duration) -> (time::OffsetDateTime, time::OffsetDateTime) {
    let now = time::OffsetDateTime::now_utc();
    // Backdate a little so a node whose clock lags does not reject a brand-new certificate.
    let secs = validity.as_secs().min(100 * 365 * 24 * 3600) as i64;
    (
        now - time::Duration::minutes(5),
        now + time::Duration::seconds(secs),
    )
}

/// The CA's parameters. Rebuilt identically to sign new leaves under an existing CA key: the
/// issuer name and key identifier come from these and the key, so no parsing is needed.
fn ca_params() -> Result<CertificateParams, TlsError> {
    let mut ca = CertificateParams::new(Vec::<String>::new())?;
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, "ecr-token-webhook CA");
    ca.distinguished_name = dn;
    ca.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    ca.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    Ok(ca)
}

/// A new CA: certificate and key, PEM.
pub fn generate_ca(validity: Duration) -> Result<(String, String), TlsError> {
    let key = KeyPair::generate()?;
    let mut ca = ca_params()?;
    (ca.not_before, ca.not_after) = validity_window(validity);
    let cert = ca.self_signed(&key)?;
    Ok((cert.pem(), key.serialize_pem()))
}

/// A serving certificate for `names`, signed by the CA whose key is `ca_key_pem`.
pub fn sign_leaf(
    ca_key_pem: &str,
    names: &[String],
    validity: Duration,
) -> Result<(String, String), TlsError> {
    let ca_key = KeyPair::from_pem(ca_key_pem)?;
    let key = KeyPair::generate()?;
    let mut leaf = CertificateParams::new(Vec::<String>::new())?;
    let mut dn = DistinguishedName::new();
    dn.push(
        DnType::CommonName,
        names
            .first()
            .map(String::as_str)
            .unwrap_or("ecr-token-webhook"),
    );
    leaf.distinguished_name = dn;
    for name in names {
        let san = match name.parse::<IpAddr>() {
            Ok(ip) => SanType::IpAddress(ip),
            Err(_) => SanType::DnsName(
                name.clone()
                    .try_into()
                    .map_err(|_| TlsError::Name(name.clone()))?,
            ),
        };
        leaf.subject_alt_names.push(san);
    }
    leaf.key_usages = vec![
        KeyUsagePurpose::DigitalSignature,
        KeyUsagePurpose::KeyEncipherment,
    ];
    leaf.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    (leaf.not_before, leaf.not_after) = validity_window(validity);
    let issuer = Issuer::new(ca_params()?, &ca_key);
    let cert = leaf.signed_by(&key, &issuer)?;
    Ok((cert.pem(), key.serialize_pem()))
}

/// Writes `ca.crt`, `ca.key`, `tls.crt`, `tls.key` into `dir` (keys readable by the owner only).
/// Returns the paths of the serving certificate and key.
pub fn write_dir(dir: &Path, g: &Generated) -> Result<(PathBuf, PathBuf), TlsError> {
    std::fs::create_dir_all(dir).map_err(|source| TlsError::Write {
        path: dir.to_path_buf(),
        source,
    })?;
    let files = [
        ("ca.crt", &g.ca_cert_pem, false),
        ("ca.key", &g.ca_key_pem, true),
        ("tls.crt", &g.cert_pem, false),
        ("tls.key", &g.key_pem, true),
    ];
    for (name, content, private) in files {
        let path = dir.join(name);
        write_file(&path, content.as_bytes(), private).map_err(|source| TlsError::Write {
            path: path.clone(),
            source,
        })?;
    }
    Ok((dir.join("tls.crt"), dir.join("tls.key")))
}

fn write_file(path: &Path, content: &[u8], private: bool) -> std::io::Result<()> {
    use std::io::Write;
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        opts.mode(if private { 0o600 } else { 0o644 });
    }
    let mut f = opts.open(path)?;
    f.write_all(content)
}

/// Keeps a served TLS pair in step with its files. cert-manager rotates a mounted Secret by
/// swapping the kubelet's `..data` symlink, which file watches miss, so the files are polled and
/// compared byte for byte. A pair that does not load (half-written, mismatched) is refused with
/// a log line and the pair in service stays; it is tried again at the next change.
/// Polls the serving pair's files ([`crate::reload`]).
pub struct PairReloader {
    cert: PathBuf,
    key: PathBuf,
    last: (Vec<u8>, Vec<u8>),
    client: ClientVerifier,
}

/// A pair that was read and put together: its server config and its certificate's expiry.
#[derive(Debug)]
pub struct ServingPair {
    pub config: Arc<rustls::ServerConfig>,
    pub not_after: Option<SystemTime>,
}

impl PairReloader {
    /// Starts from the pair currently in service (as read at start-up).
    pub fn new(cert: &Path, key: &Path) -> Self {
        let read = |p: &Path| std::fs::read(p).unwrap_or_default();
        PairReloader {
            last: (read(cert), read(key)),
            cert: cert.to_path_buf(),
            key: key.to_path_buf(),
            client: None,
        }
    }

    /// Reloaded pairs keep asking clients for certificates verified by `client`.
    pub fn with_client_auth(mut self, client: ClientVerifier) -> Self {
        self.client = client;
        self
    }

    /// The expiry of the certificate last read (the one in service unless it was refused).
    pub fn not_after(&self) -> Option<SystemTime> {
        not_after(&self.last.0, "TLS certificate").ok()
    }
}

impl Source for PairReloader {
    type Value = ServingPair;

    /// Reads both files; a new server config when they changed and form a valid pair.
    fn poll(&mut self) -> Poll<ServingPair> {
        let read = |p: &Path| {
            std::fs::read(p).map_err(|source| TlsError::Read {
                path: p.to_path_buf(),
                source,
            })
        };
        let pair = match read(&self.cert).and_then(|c| Ok((c, read(&self.key)?))) {
            Ok(pair) => pair,
            Err(e) => return Poll::Refused(e.to_string()),
        };
        if pair == self.last {
            return Poll::Unchanged;
        }
        let result = server_config_with(
            &pair.0,
            &pair.1,
            &self.cert.display().to_string(),
            self.client.clone(),
        );
        // Remember what was seen either way: a refused pair is logged once, not every poll.
        self.last = pair;
        match result {
            Ok(config) => Poll::Changed(ServingPair {
                config,
                not_after: self.not_after(),
            }),
            Err(e) => Poll::Refused(e.to_string()),
        }
    }
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
