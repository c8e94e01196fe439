//! TLS a service terminates itself: rustls (the ring provider), the
//! certificate chain and private key read from PEM files, and read again
//! when they change.
//!
//! Certificates are rotated by replacing the files (a cert-manager or
//! Kubernetes Secret volume swaps them in place); [`ServerTls::watch`]
//! checks them every [`TlsSettings::reload_interval_ms`] and takes a new
//! pair for every handshake after it, without a restart and without
//! dropping connections. A pair that does not load (half written, a key
//! that does not match the certificate) is refused, logged without its
//! content and counted, and the previous pair stays in use.
//!
//! ```no_run
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! use hushmap_service::tls::{ServerTls, TlsSettings};
//! let settings = TlsSettings {
//!     cert_file: Some("/etc/hushmap/tls/tls.crt".into()),
//!     key_file: Some("/etc/hushmap/tls/tls.key".into()),
//!     ..TlsSettings::default()
//! };
//! let tls = ServerTls::load(&settings)?.expect("both files set");
//! let _watching = tls.watch();
//! let _acceptor = tls.acceptor(); // for hushmap_service::http::serve
//! # Ok(()) }
//! ```

use prometheus_client::metrics::counter::Counter;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::Duration;
use tokio_rustls::TlsAcceptor;
use zeroize::Zeroizing;

/// Where a listener's certificate and key are; neither set means plain
/// TCP (for a proxy that terminates TLS in front, or loopback).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(default, deny_unknown_fields)]
pub struct TlsSettings {
    /// PEM certificate chain, the leaf first.
    pub cert_file: Option<PathBuf>,
    /// PEM private key (PKCS#8, PKCS#1 or SEC1) of the leaf.
    pub key_file: Option<PathBuf>,
    /// How often the two files are checked for a change, milliseconds.
    pub reload_interval_ms: u64,
}

impl Default for TlsSettings {
    fn default() -> Self {
        TlsSettings {
            cert_file: None,
            key_file: None,
            reload_interval_ms: 10_000,
        }
    }
}

impl TlsSettings {
    /// Whether TLS is on (both files set).
    pub fn enabled(&self) -> bool {
        self.cert_file.is_some() && self.key_file.is_some()
    }
}

/// Why a certificate and key were refused. Never carries key material.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("tls.cert_file and tls.key_file go together: set both or neither")]
    Half,
    #[error("tls.reload_interval_ms must be positive")]
    Interval,
    #[error("reading {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path} holds no PEM certificate")]
    NoCertificate { path: PathBuf },
    #[error("{path} holds no PEM private key (PKCS#8, PKCS#1 or SEC1)")]
    NoKey { path: PathBuf },
    #[error("{path}: the private key is of a kind TLS cannot sign with")]
    UnusableKey { path: PathBuf },
    #[error("the private key in {key} does not belong to the certificate in {cert}")]
    Mismatch { cert: PathBuf, key: PathBuf },
    #[error("TLS configuration: {0}")]
    Rustls(#[from] rustls::Error),
}

/// The files' bytes as last loaded (the key's wiped when replaced).
#[derive(PartialEq, Eq)]
struct LoadedFiles {
    cert: Vec<u8>,
    key: Zeroizing<Vec<u8>>,
}

fn read(path: &Path) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|source| TlsError::Read {
        path: path.to_path_buf(),
        source,
    })
}

/// Parses a chain and key into what rustls serves, checking they belong
/// together.
fn certified_key(
    cert_path: &Path,
    key_path: &Path,
    files: &LoadedFiles,
) -> Result<CertifiedKey, TlsError> {
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(&files.cert)
        .collect::<Result<_, _>>()
        .map_err(|_| TlsError::NoCertificate {
            path: cert_path.to_path_buf(),
        })?;
    if chain.is_empty() {
        return Err(TlsError::NoCertificate {
            path: cert_path.to_path_buf(),
        });
    }
    let key = PrivateKeyDer::from_pem_slice(&files.key).map_err(|_| TlsError::NoKey {
        path: key_path.to_path_buf(),
    })?;
    let signing = rustls::crypto::ring::sign::any_supported_type(&key).map_err(|_| {
        TlsError::UnusableKey {
            path: key_path.to_path_buf(),
        }
    })?;
    let certified = CertifiedKey::new(chain, signing);
    certified.keys_match().map_err(|_| TlsError::Mismatch {
        cert: cert_path.to_path_buf(),
        key: key_path.to_path_buf(),
    })?;
    Ok(certified)
}

/// Hands every handshake the pair in force at its start.
#[derive(Debug)]
struct CurrentCertificate(RwLock<Arc<CertifiedKey>>);

impl ResolvesServerCert for CurrentCertificate {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.0.read().unwrap_or_else(|e| e.into_inner()).clone())
    }
}

/// A listener's TLS: an acceptor whose certificate follows the files.
#[derive(Clone)]
pub struct ServerTls {
    cert_path: PathBuf,
    key_path: PathBuf,
    interval: Duration,
    current: Arc<CurrentCertificate>,
    loaded: Arc<tokio::sync::Mutex<LoadedFiles>>,
    acceptor: TlsAcceptor,
    /// Certificate pairs taken after a change of the files.
    pub reloads: Counter,
    /// Changed files that did not load (the previous pair stayed).
    pub reload_failures: Counter,
}

impl std::fmt::Debug for ServerTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServerTls")
            .field("cert_path", &self.cert_path)
            .field("key_path", &self.key_path)
            .finish_non_exhaustive()
    }
}

impl ServerTls {
    /// Loads the pair `settings` names; `None` when TLS is off.
    pub fn load(settings: &TlsSettings) -> Result<Option<ServerTls>, TlsError> {
        let (cert_path, key_path) = match (&settings.cert_file, &settings.key_file) {
            (None, None) => return Ok(None),
            (Some(c), Some(k)) => (c.clone(), k.clone()),
            _ => return Err(TlsError::Half),
        };
        if settings.reload_interval_ms == 0 {
            return Err(TlsError::Interval);
        }
        let files = LoadedFiles {
            cert: read(&cert_path)?,
            key: Zeroizing::new(read(&key_path)?),
        };
        let current = Arc::new(CurrentCertificate(RwLock::new(Arc::new(certified_key(
            &cert_path, &key_path, &files,
        )?))));
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()?
            .with_no_client_auth()
            .with_cert_resolver(current.clone());
        // Flight is gRPC (HTTP/2); the page is HTTP/1.1 or HTTP/2.
        config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        Ok(Some(ServerTls {
            cert_path,
            key_path,
            interval: Duration::from_millis(settings.reload_interval_ms),
            current,
            loaded: Arc::new(tokio::sync::Mutex::new(files)),
            acceptor: TlsAcceptor::from(Arc::new(config)),
            reloads: Counter::default(),
            reload_failures: Counter::default(),
        }))
    }

    /// The acceptor to hand [`crate::http::serve`].
    pub fn acceptor(&self) -> TlsAcceptor {
        self.acceptor.clone()
    }

    /// Checks the files once: a changed pair that loads is in force for
    /// every handshake after this returns `Ok(true)`.
    pub async fn reload_if_changed(&self) -> Result<bool, TlsError> {
        let files = LoadedFiles {
            cert: read(&self.cert_path)?,
            key: Zeroizing::new(read(&self.key_path)?),
        };
        let mut loaded = self.loaded.lock().await;
        if *loaded == files {
            return Ok(false);
        }
        let certified = certified_key(&self.cert_path, &self.key_path, &files)?;
        *self.current.0.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(certified);
        *loaded = files;
        self.reloads.inc();
        Ok(true)
    }

    /// Watches the files for as long as the returned task runs (abort it,
    /// or drop the runtime, to stop).
    pub fn watch(&self) -> tokio::task::JoinHandle<()> {
        let tls = self.clone();
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(tls.interval).await;
                match tls.reload_if_changed().await {
                    Ok(true) => tracing::info!("TLS certificate reloaded"),
                    Ok(false) => {}
                    Err(e) => {
                        // A rotation caught half written is retried at the
                        // next tick; the error names files, never contents.
                        tls.reload_failures.inc();
                        tracing::warn!(error = %e, "TLS certificate files changed but did not load; keeping the previous pair");
                    }
                }
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(cert: &Path, key: &Path) -> TlsSettings {
        TlsSettings {
            cert_file: Some(cert.to_path_buf()),
            key_file: Some(key.to_path_buf()),
            ..TlsSettings::default()
        }
    }

    #[test]
    fn off_unless_both_files_are_named() {
        assert!(ServerTls::load(&TlsSettings::default()).unwrap().is_none());
        let half = TlsSettings {
            cert_file: Some("/x.crt".into()),
            ..TlsSettings::default()
        };
        assert!(!half.enabled());
        assert!(matches!(ServerTls::load(&half), Err(TlsError::Half)));
    }

    #[test]
    fn bad_files_are_refused_by_name_without_their_content() {
        let dir = std::env::temp_dir().join(format!("hushmap-tls-unit-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let (cert, key) = (dir.join("tls.crt"), dir.join("tls.key"));
        let missing = ServerTls::load(&settings(&cert, &key)).unwrap_err();
        assert!(matches!(missing, TlsError::Read { .. }), "{missing}");
        std::fs::write(&cert, "secret-looking garbage").unwrap();
        std::fs::write(
            &key,
            "-----BEGIN PRIVATE KEY-----\nc2VjcmV0\n-----END PRIVATE KEY-----\n",
        )
        .unwrap();
        let garbage = ServerTls::load(&settings(&cert, &key)).unwrap_err();
        assert!(
            matches!(garbage, TlsError::NoCertificate { .. }),
            "{garbage}"
        );
        assert!(!garbage.to_string().contains("garbage"));
        let zero = TlsSettings {
            reload_interval_ms: 0,
            ..settings(&cert, &key)
        };
        assert!(matches!(ServerTls::load(&zero), Err(TlsError::Interval)));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
