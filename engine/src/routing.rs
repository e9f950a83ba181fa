//! Version labels and the models' traffic policies (`traffic/`): setting,
//! replacing and clearing them, and the policy files beside a model's
//! config. Routing a request by them is `infer.rs`.
use std::borrow::Cow;
use std::path::Path;
use std::sync::Arc;

use super::model::ModelVersion;
use super::traffic::{Origin, PolicySpec, Traffic};
use crate::engine::Engine;
use crate::error::{Error, Result};

/// One folder name, as a model name must be.
fn check_model_name(name: &str) -> bool {
    !name.is_empty() && !name.starts_with('.') && !name.contains(['/', '\\'])
}

/// The policy file beside `config.pbtxt`.
pub const POLICY_FILE: &str = "traffic.json";

impl Engine {
    /// A version as a number: a label of the model's policy becomes the
    /// version it names; anything else is left for resolution to judge.
    pub(crate) fn version_number<'a>(&self, name: &str, version: Option<&'a str>) -> Option<Cow<'a, str>> {
        let v = version?;
        if v.is_empty() || v.bytes().all(|b| b.is_ascii_digit()) {
            return Some(Cow::Borrowed(v));
        }
        match self.traffic.load().get(name).and_then(|t| t.label(v)) {
            Some(n) => Some(Cow::Owned(n.to_string())),
            None => Some(Cow::Borrowed(v)),
        }
    }

    /// The version variant `i` of `name`'s policy serves now.
    pub(crate) fn variant_target(&self, name: &str, t: &Traffic, i: usize) -> Result<Arc<ModelVersion>> {
        let v = &t.spec.variants[i];
        let target = v.model.as_deref().unwrap_or(name);
        let version = v.version.as_deref().map(|ver| match t.label(ver) {
            Some(n) if v.model.is_none() => Cow::Owned(n.to_string()),
            _ => Cow::Borrowed(ver),
        });
        self.live.resolve(target, version.as_deref())
    }

    /// `Err(NotFound)` for a model the server does not know.
    pub fn model_known(&self, name: &str) -> Result<()> {
        self.live.entry(name).map(|_| ())
    }

    /// A model a variant may name: known to the server, or a folder of the
    /// repository (at start-up, a policy file may be read before the model
    /// it names has begun to load).
    fn model_exists(&self, name: &str) -> bool {
        self.live.entry(name).is_ok() || (check_model_name(name) && self.model_dir(name).is_dir())
    }

    /// Checks a policy for `name` (its variants' models must exist).
    pub fn parse_traffic(&self, name: &str, json: &[u8]) -> Result<PolicySpec> {
        self.live.entry(name)?;
        PolicySpec::parse(name, json, |m| self.model_exists(m)).map_err(Error::invalid)
    }

    /// Replaces `name`'s policy in one atomic swap: every request routes by
    /// the old policy or the new one, never a mix.
    pub fn set_traffic(&self, name: &str, spec: PolicySpec, origin: Origin) {
        let previous = self.traffic(name);
        let traffic = Arc::new(Traffic::new(name, spec, origin, previous.as_deref(), false));
        self.traffic.rcu(|current| {
            let mut map = std::collections::BTreeMap::clone(current);
            map.insert(name.to_owned(), Arc::clone(&traffic));
            map
        });
        tracing::info!(model = name, ?origin, "traffic policy set");
    }

    /// Replaces `expected` (a rollout's step) unless another policy took its
    /// place meanwhile; `true` when it did.
    pub(crate) fn replace_traffic(&self, name: &str, expected: &Arc<Traffic>, spec: PolicySpec) -> bool {
        let next = Arc::new(Traffic::new(name, spec, expected.origin, Some(expected), true));
        let mut replaced = false;
        self.traffic.rcu(|current| {
            let mut map = std::collections::BTreeMap::clone(current);
            replaced = map.get(name).is_some_and(|t| Arc::ptr_eq(t, expected));
            if replaced {
                map.insert(name.to_owned(), Arc::clone(&next));
            }
            map
        });
        replaced
    }

    pub fn traffic(&self, name: &str) -> Option<Arc<Traffic>> {
        self.traffic.load().get(name).cloned()
    }

    /// Removes `name`'s policy (plain version routing again); `false` when
    /// it had none.
    pub fn clear_traffic(&self, name: &str) -> bool {
        let had = self.traffic.load().contains_key(name);
        if had {
            self.traffic.rcu(|current| {
                let mut map = std::collections::BTreeMap::clone(current);
                map.remove(name);
                map
            });
            tracing::info!(model = name, "traffic policy removed");
        }
        had
    }

    /// After a load: the model folder's `traffic.json`, if any, becomes its
    /// policy (a policy set through the API is not overwritten by an
    /// unchanged file; a removed file removes the policy it set). `Err`: the
    /// file is bad; the policy in force stays.
    pub(crate) fn apply_policy_file(&self, name: &str, dir: &Path) -> std::result::Result<(), String> {
        let current = self.traffic(name);
        match std::fs::read(dir.join(POLICY_FILE)) {
            Ok(bytes) => {
                let spec = PolicySpec::parse(name, &bytes, |m| self.model_exists(m))
                    .map_err(|e| format!("{POLICY_FILE}: {e}"))?;
                let unchanged = current.as_ref().is_some_and(|t| t.spec == spec);
                if !unchanged {
                    self.set_traffic(name, spec, Origin::File);
                }
                Ok(())
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                if current.is_some_and(|t| t.origin == Origin::File) {
                    self.clear_traffic(name);
                }
                Ok(())
            }
            Err(e) => Err(format!("cannot read {POLICY_FILE}: {e}")),
        }
    }
}
