//! Registry references: `models:/name@alias`, `/Stage`, `/N`, `/latest`, and
//! the `--registry-model [served=]models:/...` flag that names one.

/// What a `models:/` URI points at.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Selector {
    Alias(String),
    Stage(String),
    Version(u64),
    /// `models:/name/latest`: the highest version in any stage.
    Latest,
}

/// A parsed `models:/<name>@<alias>`, `models:/<name>/<stage>` or
/// `models:/<name>/<version>`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Reference {
    pub name: String,
    pub selector: Selector,
    /// As the user wrote it, for logs and provenance.
    pub uri: String,
}

impl Reference {
    pub fn parse(uri: &str) -> Result<Reference, String> {
        let bad = |why: &str| {
            format!(
                "'{uri}' is not a registry reference ({why}); expected models:/<name>@<alias>, models:/<name>/<stage> or models:/<name>/<version>"
            )
        };
        let rest = uri
            .strip_prefix("models:/")
            .ok_or_else(|| bad("it must start with models:/"))?;
        let (name, selector) = if let Some((name, alias)) = rest.rsplit_once('@') {
            (name, Selector::Alias(alias.to_owned()))
        } else if let Some((name, last)) = rest.rsplit_once('/') {
            let selector = match last.parse::<u64>() {
                Ok(v) => Selector::Version(v),
                Err(_) if last.eq_ignore_ascii_case("latest") => Selector::Latest,
                Err(_) => Selector::Stage(last.to_owned()),
            };
            (name, selector)
        } else {
            return Err(bad("no alias, stage or version"));
        };
        if name.is_empty() || matches!(&selector, Selector::Alias(a) | Selector::Stage(a) if a.is_empty()) {
            return Err(bad("empty name, alias or stage"));
        }
        Ok(Reference {
            name: name.to_owned(),
            selector,
            uri: uri.to_owned(),
        })
    }
}

/// `--registry-model <served name>=<models:/ reference>`.
#[derive(Clone, Debug)]
pub struct Follow {
    pub served: String,
    pub reference: Reference,
}

impl Follow {
    pub fn parse(flag: &str) -> Result<Follow, String> {
        let (served, uri) = flag
            .split_once('=')
            .ok_or_else(|| format!("--registry-model '{flag}' must be <served name>=models:/<name>@<alias>"))?;
        let valid = !served.is_empty() && !served.starts_with('.') && !served.contains(['/', '\\']);
        if !valid {
            return Err(format!("--registry-model '{flag}': '{served}' is not a model name"));
        }
        Ok(Follow {
            served: served.to_owned(),
            reference: Reference::parse(uri)?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn references_parse() {
        let r = Reference::parse("models:/fraud-detection@champion").unwrap();
        assert_eq!(
            (r.name.as_str(), r.selector),
            ("fraud-detection", Selector::Alias("champion".into()))
        );
        let r = Reference::parse("models:/fraud/Production").unwrap();
        assert_eq!(r.selector, Selector::Stage("Production".into()));
        assert_eq!(
            Reference::parse("models:/fraud/3").unwrap().selector,
            Selector::Version(3)
        );
        assert_eq!(
            Reference::parse("models:/fraud/latest").unwrap().selector,
            Selector::Latest
        );
        for bad in ["fraud@champion", "models:/fraud", "models:/@x", "models:/fraud@"] {
            let e = Reference::parse(bad).unwrap_err();
            assert!(e.contains(bad), "{e}");
        }
        let f = Follow::parse("fraud=models:/fraud-detection@champion").unwrap();
        assert_eq!(f.served, "fraud");
        assert!(Follow::parse("../x=models:/a/1").is_err());
        assert!(Follow::parse("models:/a/1").is_err());
    }
}
