//! The shipped RBAC, read from `manifests/rbac/rbac.yaml`: what the
//! operator's ServiceAccount may do, by ClusterRole (any namespace) and
//! Role (its own namespace).

use std::path::Path;

use serde_json::Value;

/// The shipped RBAC: the operator ServiceAccount's ClusterRole rules (any
/// namespace) and Role rules (their own namespace).
#[derive(Debug, Default)]
pub(super) struct Rbac {
    rules: Vec<Rule>,
}

#[derive(Debug)]
struct Rule {
    /// A Role's namespace; `None` for a ClusterRole's rule.
    namespace: Option<String>,
    groups: Vec<String>,
    resources: Vec<String>,
    verbs: Vec<String>,
}

impl Rbac {
    pub(super) fn load(path: &Path) -> Rbac {
        let text = std::fs::read_to_string(path)
            .unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
        let mut rbac = Rbac::default();
        for doc in text.split("\n---") {
            let Ok(v) = serde_saphyr::from_str::<Value>(doc) else {
                continue;
            };
            let namespace = match v["kind"].as_str() {
                Some("ClusterRole") => None,
                Some("Role") => v["metadata"]["namespace"].as_str().map(str::to_owned),
                _ => continue,
            };
            let strings = |v: &Value| -> Vec<String> {
                v.as_array()
                    .map(|a| {
                        a.iter()
                            .filter_map(|s| s.as_str().map(str::to_owned))
                            .collect()
                    })
                    .unwrap_or_default()
            };
            for rule in v["rules"].as_array().into_iter().flatten() {
                rbac.rules.push(Rule {
                    namespace: namespace.clone(),
                    groups: strings(&rule["apiGroups"]),
                    resources: strings(&rule["resources"]),
                    verbs: strings(&rule["verbs"]),
                });
            }
        }
        assert!(
            !rbac.rules.is_empty(),
            "no RBAC rules in {}",
            path.display()
        );
        rbac
    }

    pub(super) fn allows(&self, verb: &str, group: &str, resource: &str, namespace: &str) -> bool {
        self.rules.iter().any(|r| {
            r.namespace.as_deref().is_none_or(|ns| ns == namespace)
                && r.groups.iter().any(|g| g == group)
                && r.resources.iter().any(|r| r == resource)
                && r.verbs.iter().any(|v| v == verb)
        })
    }
}
