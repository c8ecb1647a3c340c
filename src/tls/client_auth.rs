//! Caller authentication (`--tls-client-ca-file`): the webhook port serves only TLS clients
//! whose certificate chains to a CA, and, when names are given, carries one of them. Everyone
//! else is refused at the handshake, counted and logged with the peer address (rate-limited).
//!
//! The chain is checked by rustls's `WebPkiClientVerifier`; this module adds the name check,
//! reloads the CA file (polled like the serving pair) and classifies refused handshakes.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use rustls::DistinguishedName;
use rustls::client::danger::HandshakeSignatureValid;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, UnixTime};
use rustls::server::WebPkiClientVerifier;
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::{CertificateError, DigitallySignedStruct, SignatureScheme};

use crate::metrics::{CallerRefusal, Metrics};
use crate::reload::{Poll, Source};

/// At most one log line per this long about refused callers; the count of the lines left out
/// goes with the next one (the metric counts every refusal).
const LOG_EVERY: Duration = Duration::from_secs(10);

#[derive(Debug, thiserror::Error)]
pub enum ClientCaError {
    #[error("cannot read the client CA file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("client CA file {what}: no PEM certificate found")]
    NoCertificate { what: String },
    #[error("client CA file {what}: {reason}")]
    Unusable { what: String, reason: String },
}

/// The verifier for a CA bundle in PEM: certificates must chain to one of its certificates.
fn verifier_from_pem(pem: &[u8], what: &str) -> Result<Arc<dyn ClientCertVerifier>, ClientCaError> {
    let unusable = |reason: String| ClientCaError::Unusable {
        what: what.to_string(),
        reason,
    };
    let mut roots = rustls::RootCertStore::empty();
    for der in CertificateDer::pem_slice_iter(pem) {
        let der = der.map_err(|e| unusable(format!("unreadable PEM: {e}")))?;
        roots
            .add(der)
            .map_err(|e| unusable(format!("not a usable CA certificate: {e}")))?;
    }
    if roots.is_empty() {
        return Err(ClientCaError::NoCertificate {
            what: what.to_string(),
        });
    }
    WebPkiClientVerifier::builder(Arc::new(roots))
        .build()
        .map_err(|e| unusable(e.to_string()))
}

/// The names a client certificate carries: its DNS subject alternative names and its subject's
/// common names. None when the certificate cannot be parsed.
pub fn names_of(cert_der: &[u8]) -> Option<Vec<String>> {
    let (_, cert) = x509_parser::parse_x509_certificate(cert_der).ok()?;
    let mut names: Vec<String> = cert
        .subject()
        .iter_common_name()
        .filter_map(|cn| cn.as_str().ok())
        .map(str::to_string)
        .collect();
    if let Ok(Some(san)) = cert.subject_alternative_name() {
        for name in &san.value.general_names {
            if let x509_parser::extensions::GeneralName::DNSName(dns) = name {
                names.push(dns.to_string());
            }
        }
    }
    Some(names)
}

/// Whether a certificate carries one of `required` (compared without regard to case, as DNS
/// names are). An empty `required` admits any certificate.
pub fn check_names(cert_der: &[u8], required: &[String]) -> Result<(), rustls::Error> {
    if required.is_empty() {
        return Ok(());
    }
    let carried = names_of(cert_der).ok_or(rustls::Error::InvalidCertificate(
        CertificateError::BadEncoding,
    ))?;
    let found = carried
        .iter()
        .any(|c| required.iter().any(|r| r.eq_ignore_ascii_case(c)));
    if found {
        Ok(())
    } else {
        Err(rustls::Error::InvalidCertificate(
            CertificateError::NotValidForName,
        ))
    }
}

/// The client-certificate verifier of the webhook port: the CA's chain check, then the names.
/// The CA in force can be replaced while serving ([`ClientAuth::poll`]); handshakes in progress
/// keep the one they started with.
#[derive(Debug)]
pub struct ClientAuth {
    ca_file: PathBuf,
    names: Vec<String>,
    current: RwLock<Arc<dyn ClientCertVerifier>>,
    /// The CA file's bytes as last read, in service or refused (refused once, not every poll).
    last: Mutex<Vec<u8>>,
}

impl ClientAuth {
    /// Reads the CA file; `names` (trimmed, blanks dropped) are the names a certificate must
    /// carry one of, none for any certificate the CA signed.
    pub fn load(ca_file: &Path, names: &[String]) -> Result<Arc<ClientAuth>, ClientCaError> {
        let pem = read(ca_file)?;
        let verifier = verifier_from_pem(&pem, &ca_file.display().to_string())?;
        Ok(Arc::new(ClientAuth {
            ca_file: ca_file.to_path_buf(),
            names: names
                .iter()
                .map(|n| n.trim().to_string())
                .filter(|n| !n.is_empty())
                .collect(),
            current: RwLock::new(verifier),
            last: Mutex::new(pem),
        }))
    }

    pub fn ca_file(&self) -> &Path {
        &self.ca_file
    }

    pub fn names(&self) -> &[String] {
        &self.names
    }

    fn verifier(&self) -> Arc<dyn ClientCertVerifier> {
        self.current
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Reads the CA file; a changed file that makes a usable CA is put in service, one that
    /// does not is refused (the CA in service stays). Blocking file I/O.
    pub fn poll(&self) -> Poll<()> {
        let pem = match read(&self.ca_file) {
            Ok(pem) => pem,
            Err(e) => return Poll::Refused(e.to_string()),
        };
        let mut last = self.last.lock().unwrap_or_else(|e| e.into_inner());
        if *last == pem {
            return Poll::Unchanged;
        }
        let built = verifier_from_pem(&pem, &self.ca_file.display().to_string());
        *last = pem;
        match built {
            Ok(verifier) => {
                *self.current.write().unwrap_or_else(|e| e.into_inner()) = verifier;
                Poll::Changed(())
            }
            Err(e) => Poll::Refused(e.to_string()),
        }
    }
}

fn read(path: &Path) -> Result<Vec<u8>, ClientCaError> {
    std::fs::read(path).map_err(|source| ClientCaError::Read {
        path: path.to_path_buf(),
        source,
    })
}

impl ClientCertVerifier for ClientAuth {
    /// No hints: a client with one certificate sends it whatever its issuer (Go's TLS client,
    /// the API server's, sends none when its certificate's issuer is not among the hints,
    /// which would turn an intermediate CA into a silent "no certificate").
    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        &[]
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        self.verifier()
            .verify_client_cert(end_entity, intermediates, now)?;
        check_names(end_entity, &self.names)?;
        Ok(ClientCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.verifier().verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.verifier().verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.verifier().supported_verify_schemes()
    }
}

/// Why a failed handshake was a refused caller, if it was one: no certificate, one that does
/// not chain to the CA (or is otherwise bad), an expired or not yet valid one, or one without
/// a required name. Other failures (not TLS, timeouts, the client refusing our certificate)
/// are not refusals.
pub fn refusal(e: &std::io::Error) -> Option<CallerRefusal> {
    let tls = e.get_ref()?.downcast_ref::<rustls::Error>()?;
    match tls {
        rustls::Error::NoCertificatesPresented => Some(CallerRefusal::NoCertificate),
        rustls::Error::InvalidCertificate(c) => Some(match c {
            CertificateError::Expired
            | CertificateError::ExpiredContext { .. }
            | CertificateError::NotValidYet
            | CertificateError::NotValidYetContext { .. } => CallerRefusal::Expired,
            CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. } => {
                CallerRefusal::WrongName
            }
            _ => CallerRefusal::Untrusted,
        }),
        _ => None,
    }
}

/// Lets one event through per period and counts those held back in between.
#[derive(Debug)]
pub struct Throttle {
    every: Duration,
    last: Option<Instant>,
    held: u64,
}

impl Throttle {
    pub fn new(every: Duration) -> Self {
        Throttle {
            every,
            last: None,
            held: 0,
        }
    }

    /// Some(number held back since the last one let through) when this one may pass.
    pub fn admit(&mut self, now: Instant) -> Option<u64> {
        match self.last {
            Some(last) if now.saturating_duration_since(last) < self.every => {
                self.held += 1;
                None
            }
            _ => {
                self.last = Some(now);
                Some(std::mem::take(&mut self.held))
            }
        }
    }
}

/// The webhook server's accept-error handler: counts refused callers by reason and logs them
/// with the peer address, at most one line per [`LOG_EVERY`].
pub fn refusal_handler(
    metrics: Arc<Metrics>,
) -> impl Fn(Option<&SocketAddr>, &std::io::Error) + Send + Sync + 'static {
    let throttle = Mutex::new(Throttle::new(LOG_EVERY));
    move |peer, e| {
        let Some(reason) = refusal(e) else {
            return;
        };
        metrics.caller_refused(reason);
        let admitted = throttle
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .admit(Instant::now());
        if let Some(held_back) = admitted {
            let peer = peer.map_or_else(|| "unknown".to_string(), ToString::to_string);
            tracing::warn!(%peer, reason = reason.label(), error = %e, refusals_not_logged = held_back,
                "refused a caller at the TLS handshake (--tls-client-ca-file)");
        }
    }
}

/// The CA in service is shared with the handshakes, so the poller holds it by `Arc`.
impl Source for Arc<ClientAuth> {
    type Value = ();

    fn poll(&mut self) -> Poll<()> {
        ClientAuth::poll(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rcgen::{
        BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer,
        KeyPair, SanType,
    };

    fn ca() -> (String, KeyPair, CertificateParams) {
        let key = KeyPair::generate().unwrap();
        let mut p = CertificateParams::new(Vec::<String>::new()).unwrap();
        p.distinguished_name.push(DnType::CommonName, "test CA");
        p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        let cert = p.self_signed(&key).unwrap();
        (cert.pem(), key, p)
    }

    fn leaf(cn: &str, dns: &[&str], issuer: &Issuer<'_, KeyPair>) -> CertificateDer<'static> {
        let key = KeyPair::generate().unwrap();
        let mut p = CertificateParams::new(Vec::<String>::new()).unwrap();
        p.distinguished_name.push(DnType::CommonName, cn);
        p.subject_alt_names = dns
            .iter()
            .map(|d| SanType::DnsName((*d).try_into().unwrap()))
            .collect();
        p.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        p.signed_by(&key, issuer).unwrap().der().clone()
    }

    #[test]
    fn names_are_checked_against_sans_and_common_name() {
        let (_, key, params) = ca();
        let issuer = Issuer::new(params, key);
        let both = leaf("apiserver", &["kube-apiserver.webhook"], &issuer);
        let cn_only = leaf("Kube-APIServer.Webhook", &[], &issuer);
        let names = |n: &[&str]| n.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        let cases: &[(&CertificateDer, &[&str], bool)] = &[
            (&both, &[], true),
            (&both, &["kube-apiserver.webhook"], true),
            (&both, &["apiserver"], true),
            (&both, &["other", "KUBE-APISERVER.WEBHOOK"], true),
            (&both, &["other"], false),
            (&both, &["kube-apiserver"], false),
            (&cn_only, &["kube-apiserver.webhook"], true),
            (&cn_only, &["apiserver"], false),
        ];
        for (cert, required, ok) in cases {
            let got = check_names(cert, &names(required));
            assert_eq!(got.is_ok(), *ok, "{required:?}: {got:?}");
            if !ok {
                assert_eq!(
                    refusal(&as_io(got.unwrap_err())),
                    Some(CallerRefusal::WrongName)
                );
            }
        }
        // Garbage is refused as a bad certificate, not accepted.
        assert!(check_names(b"not a certificate", &names(&["x"])).is_err());
        assert!(
            check_names(b"not a certificate", &[]).is_ok(),
            "no names: the chain decides"
        );
    }

    fn as_io(e: rustls::Error) -> std::io::Error {
        std::io::Error::new(std::io::ErrorKind::InvalidData, e)
    }

    #[test]
    fn refusals_are_told_apart_from_other_failures() {
        use CallerRefusal::*;
        let cases: Vec<(std::io::Error, Option<CallerRefusal>)> = vec![
            (
                as_io(rustls::Error::NoCertificatesPresented),
                Some(NoCertificate),
            ),
            (
                as_io(rustls::Error::InvalidCertificate(
                    CertificateError::UnknownIssuer,
                )),
                Some(Untrusted),
            ),
            (
                as_io(rustls::Error::InvalidCertificate(
                    CertificateError::BadSignature,
                )),
                Some(Untrusted),
            ),
            (
                as_io(rustls::Error::InvalidCertificate(CertificateError::Expired)),
                Some(Expired),
            ),
            (
                as_io(rustls::Error::InvalidCertificate(
                    CertificateError::NotValidYet,
                )),
                Some(Expired),
            ),
            (
                as_io(rustls::Error::InvalidCertificate(
                    CertificateError::NotValidForName,
                )),
                Some(WrongName),
            ),
            // The client refusing our certificate, a non-TLS caller, a timeout: not refusals.
            (
                as_io(rustls::Error::AlertReceived(
                    rustls::AlertDescription::UnknownCA,
                )),
                None,
            ),
            (
                as_io(rustls::Error::InvalidMessage(
                    rustls::InvalidMessage::InvalidContentType,
                )),
                None,
            ),
            (
                std::io::Error::new(std::io::ErrorKind::TimedOut, "late"),
                None,
            ),
            (
                std::io::Error::from(std::io::ErrorKind::ConnectionReset),
                None,
            ),
        ];
        for (e, want) in cases {
            assert_eq!(refusal(&e), want, "{e}");
        }
    }

    #[test]
    fn throttle_lets_one_through_per_period_and_counts_the_rest() {
        let t0 = Instant::now();
        let s = Duration::from_secs(1);
        let mut t = Throttle::new(Duration::from_secs(10));
        let steps = [
            (t0, Some(0)),
            (t0 + s, None),
            (t0 + 2 * s, None),
            (t0 + 10 * s, Some(2)),
            (t0 + 11 * s, None),
            (t0 + 30 * s, Some(1)),
            (t0 + 31 * s, None),
        ];
        for (now, want) in steps {
            assert_eq!(t.admit(now), want, "{:?}", now - t0);
        }
    }

    #[test]
    fn the_ca_file_reloads_and_bad_files_are_refused_once() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ca.crt");
        let bad_path = dir.path().join("missing.crt");
        let (a, _, _) = ca();
        let (b, _, _) = ca();
        std::fs::write(&path, &a).unwrap();
        assert!(matches!(
            ClientAuth::load(&bad_path, &[]).unwrap_err(),
            ClientCaError::Read { .. }
        ));
        let mut auth = ClientAuth::load(&path, &[" x ".into(), "".into()]).unwrap();
        assert_eq!(auth.names(), ["x"]);
        assert_eq!(auth.poll(), Poll::Unchanged);
        std::fs::write(&path, &b).unwrap();
        assert_eq!(auth.poll(), Poll::Changed(()));
        assert_eq!(auth.poll(), Poll::Unchanged);
        for (bad, want) in [
            ("", "no PEM certificate"),
            ("junk", "no PEM certificate"),
            (
                "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n",
                "not a usable CA certificate",
            ),
        ] {
            std::fs::write(&path, bad).unwrap();
            match auth.poll() {
                Poll::Refused(why) => assert!(why.contains(want), "{bad:?}: {why}"),
                other => panic!("{bad:?}: {other:?}"),
            }
            assert_eq!(auth.poll(), Poll::Unchanged, "refused once, not every poll");
        }
    }
}
