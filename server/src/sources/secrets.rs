//! Credentials stay out of logs, errors, metrics and the index. Sources build
//! every message they emit through [`Secrets::scrub`], which removes the
//! values of the credentials quiver was given, and show URLs through
//! [`display_url`], which drops user info and query strings (where presigned
//! and SAS tokens live).
use std::sync::Arc;

/// Environment variables whose values are credentials.
const SECRET_VARIABLES: &[&str] = &[
    "AWS_SECRET_ACCESS_KEY",
    "AWS_SESSION_TOKEN",
    "AWS_ACCESS_KEY_ID",
    "MLFLOW_TRACKING_TOKEN",
    "MLFLOW_TRACKING_PASSWORD",
    "AZURE_STORAGE_ACCOUNT_KEY",
    "AZURE_STORAGE_ACCESS_KEY",
    "AZURE_STORAGE_SAS_KEY",
    "AZURE_CLIENT_SECRET",
    "GOOGLE_SERVICE_ACCOUNT_KEY",
];

/// The credential values to scrub from messages.
#[derive(Clone, Debug, Default)]
pub struct Secrets {
    values: Arc<Vec<String>>,
}

impl Secrets {
    /// The credentials in the environment, plus `extra` (tokens and
    /// passwords given as flags or inside URLs).
    pub fn from_env(extra: impl IntoIterator<Item = String>) -> Secrets {
        let mut values: Vec<String> = SECRET_VARIABLES
            .iter()
            .filter_map(|v| std::env::var(v).ok())
            .chain(extra)
            // Short values would scrub ordinary words; real credentials are long.
            .filter(|v| v.len() >= 6)
            .collect();
        values.sort_by_key(|v| std::cmp::Reverse(v.len()));
        values.dedup();
        Secrets {
            values: Arc::new(values),
        }
    }

    /// `message` with every credential value replaced by `***`.
    pub fn scrub(&self, message: &str) -> String {
        let mut out = message.to_owned();
        for v in self.values.iter() {
            if out.contains(v.as_str()) {
                out = out.replace(v.as_str(), "***");
            }
        }
        out
    }
}

/// A URL as it may be shown: no user info, no query string or fragment.
pub fn display_url(url: &str) -> String {
    match url::Url::parse(url) {
        Ok(mut u) => {
            let _ = u.set_username("");
            let _ = u.set_password(None);
            u.set_query(None);
            u.set_fragment(None);
            u.to_string()
        }
        // Not a URL: cut anything after '?' and before '@' to be safe.
        Err(_) => {
            let base = url.split(['?', '#']).next().unwrap_or_default();
            match base.split_once('@') {
                Some((_, host)) => format!("***@{host}"),
                None => base.to_owned(),
            }
        }
    }
}

/// The user and password inside a URL, to scrub wherever they might echo.
pub fn url_credentials(url: &str) -> Vec<String> {
    let Ok(u) = url::Url::parse(url) else {
        return Vec::new();
    };
    let mut found = Vec::new();
    if let Some(p) = u.password() {
        found.push(p.to_owned());
    }
    if let Some((_, q)) = url.split_once('?') {
        found.push(q.to_owned());
    }
    found
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_lose_their_credentials() {
        assert_eq!(
            display_url("https://alice:hunter22@mlflow.example.com:5000/base?token=abc"),
            "https://mlflow.example.com:5000/base"
        );
        assert_eq!(display_url("s3://bucket/prefix"), "s3://bucket/prefix");
        assert_eq!(
            url_credentials("https://alice:hunter22@h/"),
            vec!["hunter22".to_string()]
        );
    }

    #[test]
    fn scrub_replaces_every_credential() {
        let s = Secrets::from_env(["token-123456".to_string(), "abc".to_string()]);
        assert_eq!(s.scrub("Bearer token-123456 failed"), "Bearer *** failed");
        // Too short to be a credential: left alone.
        assert_eq!(s.scrub("abc"), "abc");
    }
}
