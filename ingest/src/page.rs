//! The self-check page in the languages it speaks: English, Hindi and
//! Marathi. The page (`assets/selfcheck.html`) holds `{{t:key}}`
//! placeholders; each language's strings are a flat JSON file
//! (`assets/i18n/<code>.json`, the same keys in every file), including
//! what the page's script shows (`js_*`, the risk labels and the advice),
//! which travel in the page as a JSON data block. Every language's page is
//! rendered once at start-up; a request gets the one its `?lang=` names,
//! else the best match of its `Accept-Language`, else English.
//!
//! ```
//! use hushmap_ingest::page::Language;
//! assert_eq!(Language::negotiate(None, Some("mr-IN,mr;q=0.9,en;q=0.8")), Language::Marathi);
//! assert_eq!(Language::negotiate(Some("hi"), Some("en")), Language::Hindi);
//! assert_eq!(Language::negotiate(None, Some("fr, de;q=0.5")), Language::English);
//! ```

use serde_json::{Map, Value};

/// The page's template.
const TEMPLATE: &str = include_str!("../assets/selfcheck.html");
/// The page's script and styles: files of their own, the same in every
/// language, so that the page's CSP allows no inline script or style.
pub const SCRIPT: &str = include_str!("../assets/selfcheck.js");
pub const STYLES: &str = include_str!("../assets/selfcheck.css");

/// Where the page signs people in: the identity provider's endpoints of
/// an authorization code flow with PKCE, and this service's client id
/// there (the audience its ID tokens carry).
#[derive(Debug, Clone, Copy)]
pub struct SignInEndpoints<'a> {
    pub authorization_endpoint: &'a str,
    pub token_endpoint: &'a str,
    pub client_id: &'a str,
}

/// A language the self-check page speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Language {
    English,
    Hindi,
    Marathi,
}

impl Language {
    pub const ALL: [Language; 3] = [Language::English, Language::Hindi, Language::Marathi];

    /// The BCP 47 code (`lang` attributes, `Content-Language`, `?lang=`).
    pub fn code(self) -> &'static str {
        match self {
            Language::English => "en",
            Language::Hindi => "hi",
            Language::Marathi => "mr",
        }
    }

    fn strings(self) -> &'static str {
        match self {
            Language::English => include_str!("../assets/i18n/en.json"),
            Language::Hindi => include_str!("../assets/i18n/hi.json"),
            Language::Marathi => include_str!("../assets/i18n/mr.json"),
        }
    }

    fn from_code(code: &str) -> Option<Language> {
        let primary = code.split(['-', '_']).next()?.trim();
        Language::ALL
            .into_iter()
            .find(|l| l.code().eq_ignore_ascii_case(primary))
    }

    /// The language of a request: `requested` (`?lang=`) when it is one
    /// the page speaks, else the highest-weighted match in
    /// `accept_language` (RFC 9110: `q=0` excludes; a region subtag
    /// matches its language), else English.
    pub fn negotiate(requested: Option<&str>, accept_language: Option<&str>) -> Language {
        if let Some(l) = requested.and_then(Language::from_code) {
            return l;
        }
        let mut best: Option<(f32, Language)> = None;
        for item in accept_language.unwrap_or_default().split(',') {
            let mut parts = item.split(';');
            let Some(language) = parts.next().map(str::trim).and_then(Language::from_code) else {
                continue;
            };
            let q = parts
                .find_map(|p| p.trim().strip_prefix("q="))
                .map_or(Some(1.0), |q| q.trim().parse::<f32>().ok())
                .filter(|q| q.is_finite() && *q > 0.0 && *q <= 1.0);
            // The first of equal weights wins: the order the client listed.
            if let Some(q) = q
                && best.is_none_or(|(b, _)| q > b)
            {
                best = Some((q, language));
            }
        }
        best.map_or(Language::English, |(_, l)| l)
    }
}

/// The headers every public response of ingest carries, the page's
/// content security policy among them: script, style and workers only
/// from this origin (the page has no inline script or style), connections
/// only here and to the identity provider's token endpoint, no framing, no
/// plugins, no `<base>`; geolocation for this origin only (the page's
/// "use my location"), every other powerful feature off.
#[derive(Debug, Clone)]
pub struct SecurityHeaders {
    content_security_policy: axum::http::HeaderValue,
    /// Whether ingest terminates TLS itself: then browsers are told to
    /// come back over HTTPS only (HSTS).
    https: bool,
}

impl SecurityHeaders {
    pub fn new(sign_in: Option<SignInEndpoints<'_>>, https: bool) -> SecurityHeaders {
        let token_origin = sign_in
            .and_then(|s| origin_of(s.token_endpoint))
            .map(|o| format!(" {o}"))
            .unwrap_or_default();
        let policy = format!(
            "default-src 'none'; script-src 'self'; worker-src 'self'; style-src 'self'; \
             img-src 'self'; connect-src 'self'{token_origin}; form-action 'self'; \
             base-uri 'none'; object-src 'none'; frame-ancestors 'none'"
        );
        SecurityHeaders {
            // The origin was checked (config validation) to hold no
            // character a header or the policy would take as syntax.
            content_security_policy: axum::http::HeaderValue::from_str(&policy)
                .unwrap_or_else(|_| axum::http::HeaderValue::from_static("default-src 'none'")),
            https,
        }
    }

    pub fn apply(&self, headers: &mut axum::http::HeaderMap) {
        use axum::http::{HeaderValue, header};
        headers.insert(
            header::CONTENT_SECURITY_POLICY,
            self.content_security_policy.clone(),
        );
        for (name, value) in [
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
            (header::X_FRAME_OPTIONS, "DENY"),
            // Nothing of this page's address (a code on its way back from
            // the provider included) goes to another site.
            (header::REFERRER_POLICY, "same-origin"),
        ] {
            headers.insert(name, HeaderValue::from_static(value));
        }
        headers.insert(
            axum::http::HeaderName::from_static("permissions-policy"),
            HeaderValue::from_static(PERMISSIONS_POLICY),
        );
        headers.insert(
            axum::http::HeaderName::from_static("cross-origin-opener-policy"),
            HeaderValue::from_static("same-origin"),
        );
        if self.https {
            headers.insert(
                header::STRICT_TRANSPORT_SECURITY,
                HeaderValue::from_static("max-age=31536000"),
            );
        }
    }
}

/// Geolocation for the page itself; the rest off.
pub const PERMISSIONS_POLICY: &str = "geolocation=(self), camera=(), microphone=(), \
    payment=(), usb=(), serial=(), bluetooth=(), hid=(), display-capture=(), browsing-topics=()";

/// `scheme://host[:port]` of an absolute URL.
fn origin_of(url: &str) -> Option<String> {
    let (scheme, rest) = url.split_once("://")?;
    let authority = rest.split(['/', '?', '#']).next()?;
    (!authority.is_empty()).then(|| format!("{scheme}://{authority}"))
}

/// Why the pages could not be rendered (a defect in the resources, found
/// by the unit tests before it can ship).
#[derive(Debug, thiserror::Error)]
pub enum PageError {
    #[error("assets/i18n/{language}.json: {source}")]
    Strings {
        language: &'static str,
        #[source]
        source: serde_json::Error,
    },
    #[error("assets/i18n/{language}.json: no string for {key:?}")]
    MissingKey { language: &'static str, key: String },
}

/// The page in every language, rendered once.
#[derive(Debug, Clone)]
pub struct SelfCheckPages {
    pages: Vec<(Language, String)>,
}

impl SelfCheckPages {
    /// Renders every language's page, with the identity provider's
    /// endpoints (if any) in `<meta>`s the page's script reads.
    pub fn render(sign_in: Option<SignInEndpoints<'_>>) -> Result<SelfCheckPages, PageError> {
        let all = Language::ALL
            .into_iter()
            .map(Strings::of)
            .collect::<Result<Vec<_>, _>>()?;
        let pages = all
            .iter()
            .map(|strings| Ok((strings.language, render_one(strings, &all, sign_in)?)))
            .collect::<Result<_, PageError>>()?;
        Ok(SelfCheckPages { pages })
    }

    pub fn get(&self, language: Language) -> &str {
        self.pages
            .iter()
            .find(|(l, _)| *l == language)
            .map(|(_, page)| page.as_str())
            .expect("every language is rendered")
    }
}

/// One language's strings, parsed.
struct Strings {
    language: Language,
    map: Map<String, Value>,
}

impl Strings {
    fn of(language: Language) -> Result<Strings, PageError> {
        let map =
            serde_json::from_str(language.strings()).map_err(|source| PageError::Strings {
                language: language.code(),
                source,
            })?;
        Ok(Strings { language, map })
    }

    fn text(&self, key: &str) -> Result<&str, PageError> {
        self.map
            .get(key)
            .and_then(Value::as_str)
            .ok_or_else(|| PageError::MissingKey {
                language: self.language.code(),
                key: key.to_string(),
            })
    }
}

fn render_one(
    strings: &Strings,
    all: &[Strings],
    sign_in: Option<SignInEndpoints<'_>>,
) -> Result<String, PageError> {
    let language = strings.language;
    let mut out = String::with_capacity(TEMPLATE.len() * 2);
    let mut rest = TEMPLATE;
    while let Some(start) = rest.find("{{") {
        out.push_str(&rest[..start]);
        let Some(end) = rest[start..].find("}}") else {
            break;
        };
        let name = &rest[start + 2..start + end];
        match name {
            "LANG" => out.push_str(language.code()),
            "AUTHORIZATION_ENDPOINT" => {
                out.push_str(&attribute(sign_in.map_or("", |s| s.authorization_endpoint)))
            }
            "TOKEN_ENDPOINT" => out.push_str(&attribute(sign_in.map_or("", |s| s.token_endpoint))),
            "CLIENT_ID" => out.push_str(&attribute(sign_in.map_or("", |s| s.client_id))),
            "LANGUAGES" => out.push_str(&switch(language, all)?),
            // The script's strings, as data: `</` escaped so that no string
            // can close the element.
            "SCRIPT_STRINGS" => {
                let script: Map<String, Value> = strings
                    .map
                    .iter()
                    .filter(|(k, _)| {
                        k.starts_with("js_") || k.starts_with("risk_") || k.starts_with("advice_")
                    })
                    .map(|(k, v)| (k.clone(), v.clone()))
                    .collect();
                let json = serde_json::to_string(&script).expect("strings serialise");
                out.push_str(&json.replace("</", "<\\/"));
            }
            // Our own resources, HTML as written (they may hold <strong>
            // and &nbsp;).
            key => out.push_str(strings.text(key.strip_prefix("t:").unwrap_or(key))?),
        }
        rest = &rest[start + end + 2..];
    }
    out.push_str(rest);
    Ok(out)
}

/// The visible language switch: each language named in itself, the
/// current one marked for assistive technology.
fn switch(current: Language, all: &[Strings]) -> Result<String, PageError> {
    let mut links = Vec::new();
    for strings in all {
        let name = strings.text("language_name")?;
        let code = strings.language.code();
        let current = if strings.language == current {
            r#" aria-current="page""#
        } else {
            ""
        };
        links.push(format!(
            r#"<a href="?lang={code}" lang="{code}" hreflang="{code}"{current}>{name}</a>"#
        ));
    }
    Ok(links.join(" · "))
}

/// `value` escaped for a double-quoted attribute.
fn attribute(value: &str) -> String {
    value
        .replace('&', "&amp;")
        .replace('"', "&quot;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_language_has_every_string_and_nothing_else() {
        let english = Strings::of(Language::English).unwrap().map;
        for l in Language::ALL {
            let strings = Strings::of(l).unwrap().map;
            let mut keys: Vec<&String> = strings.keys().collect();
            let mut want: Vec<&String> = english.keys().collect();
            keys.sort();
            want.sort();
            assert_eq!(keys, want, "{}", l.code());
            assert!(
                strings
                    .values()
                    .all(|v| v.as_str().is_some_and(|s| !s.trim().is_empty()))
            );
        }
    }

    #[test]
    fn each_page_is_whole_in_its_own_language() {
        let pages = SelfCheckPages::render(Some(SignInEndpoints {
            authorization_endpoint: "https://id.example/?a=1&b=\"2\"",
            token_endpoint: "https://id.example/token",
            client_id: "selfcheck",
        }))
        .unwrap();
        for l in Language::ALL {
            let page = pages.get(l);
            assert!(!page.contains("{{"), "{}: a placeholder left", l.code());
            assert!(page.contains(&format!(r#"<html lang="{}">"#, l.code())));
            let h1 = Strings::of(l).unwrap().map["h1"]
                .as_str()
                .unwrap()
                .to_string();
            assert!(page.contains(&h1), "{}", l.code());
            assert!(page.contains(&format!(r#"hreflang="{}" aria-current="page""#, l.code())));
            assert!(page.contains("https://id.example/?a=1&amp;b=&quot;2&quot;"));
            assert!(
                page.contains(
                    r#"name="hushmap-token-endpoint" content="https://id.example/token""#
                )
            );
            // No inline script or style for the CSP to allow.
            assert!(
                !page.contains("<script>") && !page.contains("<style") && !page.contains(" style=")
            );
            // The script's strings are data, and none can end the element.
            let data = page
                .split(r#"<script type="application/json" id="strings">"#)
                .nth(1)
                .and_then(|s| s.split("</script>").next())
                .unwrap();
            let parsed: Map<String, Value> = serde_json::from_str(data).unwrap();
            assert!(parsed.contains_key("advice_high") && parsed.contains_key("js_need_age"));
        }
        assert!(pages.get(Language::Hindi).contains("ज़्यादा जोखिम"));
        assert!(pages.get(Language::Marathi).contains("जास्त धोका"));
    }

    #[test]
    fn the_english_advice_is_the_services_own() {
        use hushmap_schema::RiskLevel;
        use hushmap_submission::triage::advice;
        let en = Strings::of(Language::English).unwrap().map;
        for (key, level) in [
            ("advice_low", RiskLevel::Low),
            ("advice_moderate", RiskLevel::Moderate),
            ("advice_high", RiskLevel::High),
        ] {
            assert_eq!(en[key].as_str().unwrap(), advice(level), "{key}");
        }
    }

    #[test]
    fn the_language_follows_the_request() {
        let n = Language::negotiate;
        assert_eq!(n(None, None), Language::English);
        assert_eq!(n(None, Some("hi-IN,hi;q=0.9,en-US;q=0.8")), Language::Hindi);
        assert_eq!(n(None, Some("en;q=0.5, mr;q=0.7")), Language::Marathi);
        assert_eq!(n(None, Some("hi;q=0, mr;q=0.1")), Language::Marathi);
        assert_eq!(n(None, Some("de, HI")), Language::Hindi);
        assert_eq!(n(None, Some("hi;q=abc, en")), Language::English);
        assert_eq!(n(Some("mr"), Some("hi")), Language::Marathi);
        assert_eq!(n(Some("xx"), Some("hi")), Language::Hindi);
        assert_eq!(n(None, Some(";;;,,q=1")), Language::English);
    }
}
