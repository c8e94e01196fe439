//! Certificates for tests of TLS: a CA and leaves for `localhost` and
//! 127.0.0.1, made by the openssl command line.

use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject;
use std::path::PathBuf;
use std::process::Command;
use std::sync::Arc;
use tokio_rustls::TlsConnector;

/// Runs `openssl` with `args`; its error output if it fails.
pub fn openssl(args: &[&str]) -> anyhow::Result<()> {
    let out = Command::new("openssl").args(args).output()?;
    anyhow::ensure!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(())
}

/// A CA, and leaves it signs for `localhost` and 127.0.0.1.
pub struct Pki {
    dir: PathBuf,
}

impl Pki {
    pub fn new() -> anyhow::Result<Pki> {
        let dir = std::env::temp_dir().join(hushmap_testkit::unique("hushmap-tls"));
        std::fs::create_dir_all(&dir)?;
        let pki = Pki { dir };
        openssl(&[
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
            "-days",
            "2",
            "-subj",
            "/CN=hushmap test CA",
            "-keyout",
            pki.path("ca.key").to_str().unwrap(),
            "-out",
            pki.path("ca.crt").to_str().unwrap(),
        ])?;
        Ok(pki)
    }

    /// The directory holding the keys and certificates.
    pub fn dir(&self) -> &std::path::Path {
        &self.dir
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }

    /// A fresh key and a certificate for it: `<name>.key`, `<name>.crt`.
    pub fn leaf(&self, name: &str) -> anyhow::Result<(PathBuf, PathBuf)> {
        let (key, csr, crt, ext) = (
            self.path(&format!("{name}.key")),
            self.path(&format!("{name}.csr")),
            self.path(&format!("{name}.crt")),
            self.path(&format!("{name}.ext")),
        );
        std::fs::write(&ext, "subjectAltName=DNS:localhost,IP:127.0.0.1\n")?;
        openssl(&[
            "req",
            "-new",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
            "-subj",
            "/CN=localhost",
            "-keyout",
            key.to_str().unwrap(),
            "-out",
            csr.to_str().unwrap(),
        ])?;
        openssl(&[
            "x509",
            "-req",
            "-in",
            csr.to_str().unwrap(),
            "-days",
            "2",
            "-CA",
            self.path("ca.crt").to_str().unwrap(),
            "-CAkey",
            self.path("ca.key").to_str().unwrap(),
            "-CAcreateserial",
            "-extfile",
            ext.to_str().unwrap(),
            "-out",
            crt.to_str().unwrap(),
        ])?;
        Ok((crt, key))
    }

    pub fn connector(&self) -> anyhow::Result<TlsConnector> {
        let mut roots = rustls::RootCertStore::empty();
        for cert in CertificateDer::pem_file_iter(self.path("ca.crt"))? {
            roots.add(cert?)?;
        }
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut config = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()?
            .with_root_certificates(roots)
            .with_no_client_auth();
        config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        // Every handshake a full one: a resumed session shows the
        // certificate of the session it resumes, not the one served now.
        config.resumption = rustls::client::Resumption::disabled();
        Ok(TlsConnector::from(Arc::new(config)))
    }
}
