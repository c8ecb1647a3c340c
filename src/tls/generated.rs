//! A generated CA and serving pair (`--tls-self-signed`, `certs`, and the self-managed mode's
//! material), and writing it to a directory.

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, SanType,
};

use super::TlsError;

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
