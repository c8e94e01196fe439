//! A stand-in identity provider for tests: the fixture key pairs in
//! `testkit/fixtures/idp/` (test-only keys, see its README) and ID tokens
//! signed with them, well-formed or deliberately not.

use jsonwebtoken::{Algorithm, EncodingKey, Header, encode};
use std::path::PathBuf;

/// The `iss` every test token carries (unless a test says otherwise).
pub const TEST_ISSUER: &str = "https://id.test.hushmap.invalid";
/// The `aud` ingest is configured with in tests.
pub const TEST_AUDIENCE: &str = "hushmap-selfcheck-test";

/// One fixture key pair of the test identity provider.
#[derive(Clone)]
pub struct TestIdp {
    name: &'static str,
    alg: Algorithm,
    key: EncodingKey,
}

fn fixture(file: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("fixtures/idp")
        .join(file)
}

impl TestIdp {
    fn load(name: &'static str, alg: Algorithm) -> TestIdp {
        let pem = std::fs::read(fixture(&format!("{name}.key.pem"))).expect("fixture key");
        let key = match alg {
            Algorithm::EdDSA => EncodingKey::from_ed_pem(&pem),
            Algorithm::ES256 => EncodingKey::from_ec_pem(&pem),
            _ => EncodingKey::from_rsa_pem(&pem),
        }
        .expect("fixture key parses");
        TestIdp { name, alg, key }
    }

    /// The provider's Ed25519 key (EdDSA).
    pub fn ed25519() -> TestIdp {
        TestIdp::load("test-ed25519", Algorithm::EdDSA)
    }

    /// The provider's P-256 key (ES256).
    pub fn p256() -> TestIdp {
        TestIdp::load("test-p256", Algorithm::ES256)
    }

    /// The provider's RSA key (RS256).
    pub fn rsa() -> TestIdp {
        TestIdp::load("test-rsa", Algorithm::RS256)
    }

    /// A key the service is never given: "another provider", or a forger.
    /// It claims the Ed25519 key's id.
    pub fn foreign() -> TestIdp {
        TestIdp {
            name: "test-ed25519",
            ..TestIdp::load("foreign-ed25519", Algorithm::EdDSA)
        }
    }

    /// The public keys ingest is given (`identity.pem_files`).
    pub fn public_keys() -> Vec<PathBuf> {
        ["test-ed25519", "test-p256", "test-rsa"]
            .iter()
            .map(|n| fixture(&format!("{n}.pem")))
            .collect()
    }

    /// `HUSHMAP_INGEST_*` settings that make an ingest process trust this
    /// test provider.
    pub fn ingest_env() -> Vec<(String, String)> {
        let files: Vec<String> = TestIdp::public_keys()
            .iter()
            .map(|p| format!("{:?}", p.display().to_string()))
            .collect();
        vec![
            (
                "HUSHMAP_INGEST_IDENTITY__PEM_FILES".into(),
                format!("[{}]", files.join(",")),
            ),
            ("HUSHMAP_INGEST_IDENTITY__ISSUER".into(), TEST_ISSUER.into()),
            (
                "HUSHMAP_INGEST_IDENTITY__AUDIENCE".into(),
                TEST_AUDIENCE.into(),
            ),
        ]
    }

    /// The private key file (for `hushmap-dev-idp id-token` and the
    /// traffic generator).
    pub fn private_key_file(&self) -> PathBuf {
        fixture(&format!("{}.key.pem", self.name))
    }

    /// A token with exactly `claims`, signed, with this key's id.
    pub fn token_with(&self, claims: &serde_json::Value) -> String {
        let mut header = Header::new(self.alg);
        header.kid = Some(self.name.to_string());
        encode(&header, claims, &self.key).expect("test token signs")
    }

    /// A valid token for `subject`: the test issuer and audience, an hour
    /// to live.
    pub fn token_for(&self, subject: &str) -> String {
        let now = crate::now_ms() / 1000;
        self.token_with(&serde_json::json!({
            "iss": TEST_ISSUER, "aud": TEST_AUDIENCE, "sub": subject,
            "iat": now, "nbf": now, "exp": now + 3600,
        }))
    }
}

/// An unsigned token (`alg: none`) for `subject`, as an attacker would send.
pub fn unsigned_token(subject: &str) -> String {
    use base64::Engine;
    let b64 = |v: &serde_json::Value| {
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v.to_string().as_bytes())
    };
    let now = crate::now_ms() / 1000;
    format!(
        "{}.{}.",
        b64(&serde_json::json!({"alg": "none", "typ": "JWT"})),
        b64(&serde_json::json!({
            "iss": TEST_ISSUER, "aud": TEST_AUDIENCE, "sub": subject, "exp": now + 3600
        }))
    )
}
