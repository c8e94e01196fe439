//! Secrets from the environment or from files.
//!
//! Each secret a service takes (`HUSHMAP_PAYLOAD_KEYS`,
//! `HUSHMAP_CONTRIBUTOR_SECRET`, `HUSHMAP_KAFKA_SASL_PASSWORD`) may come as
//! the variable itself or, by the common `*_FILE` convention, as the path of
//! a file holding it (`HUSHMAP_PAYLOAD_KEYS_FILE=/run/secrets/payload-keys`,
//! what Kubernetes and Docker secrets mount). Setting both is refused: which
//! one is in force must never be a guess. A file's trailing newline is not
//! part of the secret. The bytes read are zeroized once copied into the
//! configuration (the configuration's own copy is the service's to wipe).

use figment::Figment;
use figment::providers::Serialized;
use serde::{Deserialize, Serialize};
use std::fmt;
use zeroize::Zeroize;

/// A secret string in a configuration: never printed (`Debug` says
/// `Secret(redacted)`), never serialised back out by a configuration that
/// skips it, and wiped from memory when dropped.
///
/// ```
/// use hushmap_service::secrets::Secret;
/// let secret = Secret::new("hunter2-hunter2");
/// assert_eq!(format!("{secret:?}"), "Secret(redacted)");
/// assert_eq!(secret.expose(), "hunter2-hunter2");
/// ```
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Secret(String);

impl Secret {
    pub fn new(s: impl Into<String>) -> Secret {
        Secret(s.into())
    }

    /// The secret itself, for the one place that uses it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl From<&str> for Secret {
    fn from(s: &str) -> Secret {
        Secret(s.to_string())
    }
}

impl Drop for Secret {
    fn drop(&mut self) {
        self.0.zeroize();
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(redacted)")
    }
}

/// Why a secret could not be read.
#[derive(Debug, thiserror::Error)]
pub enum SecretError {
    #[error("both {0} and {0}_FILE are set; keep one")]
    Both(&'static str),
    #[error("{name}_FILE: reading {path}: {source}")]
    File {
        name: &'static str,
        path: String,
        source: std::io::Error,
    },
    #[error("{name}_FILE: {path} is not UTF-8 text")]
    NotText { name: &'static str, path: String },
}

/// Merges each `(variable, configuration key)` into `fig`, from the
/// variable or from the file its `_FILE` variable names.
pub fn merge_secrets(
    mut fig: Figment,
    secrets: &[(&'static str, &'static str)],
) -> Result<Figment, SecretError> {
    for (name, key) in secrets {
        if let Some(value) = read_secret(name)? {
            fig = fig.merge(Serialized::default(key, value));
        }
    }
    Ok(fig)
}

/// The secret `name`, from the variable or its `_FILE`.
pub fn read_secret(name: &'static str) -> Result<Option<String>, SecretError> {
    let direct = std::env::var(name).ok();
    let file = std::env::var(format!("{name}_FILE")).ok();
    match (direct, file) {
        (Some(_), Some(_)) => Err(SecretError::Both(name)),
        (Some(value), None) => Ok(Some(value)),
        (None, None) => Ok(None),
        (None, Some(path)) => {
            let mut bytes = std::fs::read(&path).map_err(|source| SecretError::File {
                name,
                path: path.clone(),
                source,
            })?;
            let text = std::str::from_utf8(&bytes)
                .map(|t| t.trim_end_matches(['\n', '\r']).to_string())
                .map_err(|_| SecretError::NotText {
                    name,
                    path: path.clone(),
                });
            bytes.zeroize();
            text.map(Some)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // Each test uses variables of its own: tests run in parallel and the
    // environment is the process's.
    #[test]
    fn a_secret_comes_from_its_variable_or_its_file_not_both() {
        let dir = std::env::temp_dir().join(format!("hushmap-secrets-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("secret");
        std::fs::write(&path, "s3cret-from-a-file\n").unwrap();
        // SAFETY: these variables are read by this test only.
        unsafe {
            std::env::set_var("HUSHMAP_TEST_SECRET_A", "from-the-variable");
            std::env::set_var("HUSHMAP_TEST_SECRET_B_FILE", &path);
            std::env::set_var("HUSHMAP_TEST_SECRET_C", "x");
            std::env::set_var("HUSHMAP_TEST_SECRET_C_FILE", &path);
            std::env::set_var("HUSHMAP_TEST_SECRET_D_FILE", dir.join("missing"));
        }
        assert_eq!(
            read_secret("HUSHMAP_TEST_SECRET_A").unwrap().as_deref(),
            Some("from-the-variable")
        );
        assert_eq!(
            read_secret("HUSHMAP_TEST_SECRET_B").unwrap().as_deref(),
            Some("s3cret-from-a-file")
        );
        assert!(matches!(
            read_secret("HUSHMAP_TEST_SECRET_C"),
            Err(SecretError::Both(_))
        ));
        let missing = read_secret("HUSHMAP_TEST_SECRET_D").unwrap_err();
        assert!(
            missing.to_string().contains("HUSHMAP_TEST_SECRET_D_FILE"),
            "{missing}"
        );
        assert_eq!(read_secret("HUSHMAP_TEST_SECRET_E").unwrap(), None);
        // Into a configuration, under its key.
        #[derive(serde::Deserialize)]
        struct C {
            nested: N,
        }
        #[derive(serde::Deserialize)]
        struct N {
            password: String,
        }
        let fig = merge_secrets(
            Figment::new(),
            &[("HUSHMAP_TEST_SECRET_B", "nested.password")],
        )
        .unwrap();
        let c: C = fig.extract().unwrap();
        assert_eq!(c.nested.password, "s3cret-from-a-file");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
