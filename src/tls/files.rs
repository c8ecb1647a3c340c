//! The serving pair from files (`--tls-cert-file`, `--tls-key-file`), read at start and polled
//! for changes ([`crate::reload`]).

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::SystemTime;

use crate::reload::{Poll, Source};

use super::{ClientVerifier, TlsError, not_after, server_config_with};

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
