//! One way every service reads its settings.
//!
//! Serde defaults < the TOML file given with `--config` <
//! `HUSHMAP_<SERVICE>_*` environment variables (`__` between levels:
//! `HUSHMAP_INGEST_KAFKA__BROKERS`), then each secret from its variable or
//! the file its `_FILE` variable names ([`crate::secrets`]). The result is
//! the service's own config struct, which then checks itself.

use crate::secrets::{SecretError, merge_secrets};
use figment::Figment;
use figment::providers::{Env, Format, Serialized, Toml};
use serde::Serialize;
use serde::de::DeserializeOwned;
use std::path::Path;

/// Why settings could not be read (before any check of their values).
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error("reading configuration: {0}")]
    Settings(#[from] Box<figment::Error>),
    #[error(transparent)]
    Secret(#[from] SecretError),
}

/// `T`'s defaults, overlaid with `file` (if given), then the variables
/// starting with `env_prefix`, then `secrets`: each `(variable, key)` from
/// the variable or its `_FILE`.
///
/// ```
/// #[derive(Default, serde::Serialize, serde::Deserialize)]
/// struct Settings { port: u16, name: String }
///
/// // SAFETY: a doctest is its own process; nothing else reads this variable.
/// unsafe { std::env::set_var("HUSHMAP_DOCTEST_PORT", "8081") };
/// let s: Settings = hushmap_service::config::load_layered(None, "HUSHMAP_DOCTEST_", &[]).unwrap();
/// assert_eq!(s.port, 8081);
/// assert_eq!(s.name, "");
/// ```
pub fn load_layered<T: Default + Serialize + DeserializeOwned>(
    file: Option<&Path>,
    env_prefix: &str,
    secrets: &[(&'static str, &'static str)],
) -> Result<T, LoadError> {
    let mut fig = Figment::from(Serialized::defaults(T::default()));
    if let Some(path) = file {
        fig = fig.merge(Toml::file_exact(path));
    }
    fig = fig.merge(Env::prefixed(env_prefix).split("__"));
    Ok(merge_secrets(fig, secrets)?.extract().map_err(Box::new)?)
}
