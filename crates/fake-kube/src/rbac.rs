//! Opt-in RBAC: ServiceAccount bearer tokens are checked against Roles, ClusterRoles and their
//! bindings on every request, as the API server's RBAC authorizer does (resourceNames and
//! aggregation are not modelled). The admin token of the written kubeconfig is a superuser.

use serde_json::Value;

use crate::selector::{FieldSelector, LabelSelector};
use crate::store::Store;
use crate::types::ApiError;

/// Who is asking.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Subject {
    Admin,
    ServiceAccount { namespace: String, name: String },
}

/// What is asked.
pub struct Attributes<'a> {
    pub verb: &'a str,
    pub group: &'a str,
    /// `pods`, or `runnerpools/status` for a subresource.
    pub resource: String,
    /// Empty for cluster-scoped requests.
    pub namespace: &'a str,
    /// The object's name, for requests about one object.
    pub name: Option<&'a str>,
}

fn matches(list: &Value, wanted: &str) -> bool {
    list.as_array()
        .is_some_and(|l| l.iter().any(|v| v == "*" || v == wanted))
}

fn rule_allows(rule: &Value, a: &Attributes<'_>) -> bool {
    matches(&rule["apiGroups"], a.group)
        && matches(&rule["resources"], &a.resource)
        && matches(&rule["verbs"], a.verb)
}

fn binds(binding: &Value, namespace: &str, name: &str) -> bool {
    binding["subjects"].as_array().is_some_and(|subjects| {
        subjects.iter().any(|s| {
            s["kind"] == "ServiceAccount"
                && s["name"] == name
                && s["namespace"].as_str().unwrap_or(namespace) == namespace
        })
    })
}

fn role_rules(store: &Store, kind: &str, namespace: &str, name: &str) -> Vec<Value> {
    let (plural, ns) = if kind == "ClusterRole" {
        ("clusterroles", "")
    } else {
        ("roles", namespace)
    };
    let rt = store
        .find_type("rbac.authorization.k8s.io", plural)
        .expect("built in");
    store
        .get(&rt, ns, name)
        .ok()
        .and_then(|r| r["rules"].as_array().cloned())
        .unwrap_or_default()
}

/// Allow or refuse, with the API server's message.
pub fn authorize(store: &Store, subject: &Subject, a: &Attributes<'_>) -> Result<(), ApiError> {
    let Subject::ServiceAccount { namespace, name } = subject else {
        return Ok(());
    };
    let all = LabelSelector::default();
    let any = FieldSelector::default();
    let list = |plural: &str, ns: Option<&str>| {
        let rt = store
            .find_type("rbac.authorization.k8s.io", plural)
            .expect("built in");
        store.list(&rt, ns, &all, &any)
    };
    let mut rules = Vec::new();
    for binding in list("clusterrolebindings", None)
        .iter()
        .filter(|b| binds(b, namespace, name))
    {
        rules.extend(role_rules(
            store,
            "ClusterRole",
            "",
            binding["roleRef"]["name"].as_str().unwrap_or(""),
        ));
    }
    if !a.namespace.is_empty() {
        for binding in list("rolebindings", Some(a.namespace))
            .iter()
            .filter(|b| binds(b, namespace, name))
        {
            let kind = binding["roleRef"]["kind"].as_str().unwrap_or("Role");
            rules.extend(role_rules(
                store,
                kind,
                a.namespace,
                binding["roleRef"]["name"].as_str().unwrap_or(""),
            ));
        }
    }
    if rules.iter().any(|r| rule_allows(r, a)) {
        return Ok(());
    }
    let scope = if a.namespace.is_empty() {
        "at the cluster scope".to_owned()
    } else {
        format!("in the namespace \"{}\"", a.namespace)
    };
    // As the API server words it: the group-qualified resource (without a subresource) and
    // the object's name, then who could not do what.
    let plural = a.resource.split('/').next().unwrap_or("");
    let what = if a.group.is_empty() {
        plural.to_owned()
    } else {
        format!("{plural}.{}", a.group)
    };
    let object = a.name.map(|n| format!(" \"{n}\"")).unwrap_or_default();
    let mut refused = ApiError::new(
        403,
        "Forbidden",
        format!(
            "{what}{object} is forbidden: User \"system:serviceaccount:{namespace}:{name}\" cannot {} resource \"{}\" in API group \"{}\" {scope}",
            a.verb, a.resource, a.group
        ),
    );
    let mut details = serde_json::json!({"kind": plural});
    if !a.group.is_empty() {
        details["group"] = serde_json::json!(a.group);
    }
    if let Some(n) = a.name {
        details["name"] = serde_json::json!(n);
    }
    refused.details = Some(details);
    Err(refused)
}
