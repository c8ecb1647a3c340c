//! The serving pair from files (`--tls-cert-file`, `--tls-key-file`), read at start and polled
//! for changes ([`crate::reload`]).

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::SystemTime;

use crate::reload::{Poll, Source};

use super::{ClientVerifier, TlsError, not_after, server_config_with};

/// Reads and validates a PEM certificate chain and key from files.
pub fn load_files(cert: &Path, key: &Path) -> Result<Arc<rustls::ServerConfig>, TlsError> {
    let (cert_pem, key_pem) = read_pair(cert, key)?;
    server_config_with(&cert_pem, &key_pem, &cert.display().to_string(), None)
}

fn read_pair(cert: &Path, key: &Path) -> Result<(Vec<u8>, Vec<u8>), TlsError> {
    let read = |p: &Path| {
        std::fs::read(p).map_err(|source| TlsError::Read {
            path: p.to_path_buf(),
            source,
        })
    };
    Ok((read(cert)?, read(key)?))
}

/// Keeps a served TLS pair in step with its files. cert-manager rotates a mounted Secret by
/// swapping the kubelet's `..data` symlink, which file watches miss, so the files are polled and
/// compared byte for byte. A pair that does not load (half-written, mismatched) is refused with
/// a log line and the pair in service stays; it is tried again at the next change. The loop
/// that polls it is [`crate::reload::spawn`].
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
    /// Reads the pair once: the pair to serve now, and its reloader, which starts from those
    /// bytes. Reloaded pairs keep asking clients for certificates verified by `client`.
    pub fn load(
        cert: &Path,
        key: &Path,
        client: ClientVerifier,
    ) -> Result<(ServingPair, PairReloader), TlsError> {
        let reloader = PairReloader {
            cert: cert.to_path_buf(),
            key: key.to_path_buf(),
            last: read_pair(cert, key)?,
            client,
        };
        Ok((reloader.serving_pair()?, reloader))
    }

    /// The pair last read, put together.
    fn serving_pair(&self) -> Result<ServingPair, TlsError> {
        let (cert_pem, key_pem) = &self.last;
        let what = self.cert.display().to_string();
        Ok(ServingPair {
            config: server_config_with(cert_pem, key_pem, &what, self.client.clone())?,
            not_after: not_after(cert_pem, "TLS certificate").ok(),
        })
    }
}

impl Source for PairReloader {
    type Value = ServingPair;

    /// Reads both files; a new server config when they changed and form a valid pair.
    fn poll(&mut self) -> Poll<ServingPair> {
        let pair = match read_pair(&self.cert, &self.key) {
            Ok(pair) => pair,
            Err(e) => return Poll::Refused(e.to_string()),
        };
        if pair == self.last {
            return Poll::Unchanged;
        }
        // Remember what was seen either way: a refused pair is logged once, not every poll.
        self.last = pair;
        match self.serving_pair() {
            Ok(pair) => Poll::Changed(pair),
            Err(e) => Poll::Refused(e.to_string()),
        }
    }
}
