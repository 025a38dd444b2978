//! ValidatingAdmissionPolicies (admissionregistration.k8s.io/v1), as the API server admits a
//! create or update after schema validation: every binding whose `validationActions` deny
//! names a policy; a policy whose `matchConstraints.resourceRules` match the request and whose
//! `matchConditions` all hold runs its `validations`, and the first that fails refuses the
//! request with its message. The CEL is kube-cel's (the same engine as CRD rules here).
//! Not modelled: `paramKind`/params, `namespaceSelector`/`objectSelector`, `matchPolicy`,
//! `auditAnnotations`, and `Warn`/`Audit` actions (only `Deny` acts).

use kube_cel::{
    AdmissionRequest, GroupVersionKind, GroupVersionResource, VapEvaluator, VapExpression,
};
use serde_json::Value;

use crate::types::{ApiError, ResourceType};

/// The API group of the policies and their bindings.
pub const GROUP: &str = "admissionregistration.k8s.io";

fn contains(list: &Value, wanted: &str) -> bool {
    list.as_array()
        .is_some_and(|l| l.iter().any(|v| v == "*" || v == wanted))
}

fn rule_matches(rule: &Value, rt: &ResourceType, version: &str, operation: &str) -> bool {
    contains(&rule["apiGroups"], &rt.group)
        && contains(&rule["apiVersions"], version)
        && contains(&rule["resources"], &rt.plural)
        && contains(&rule["operations"], operation)
}

/// A ValidatingAdmissionPolicy and one of its bindings.
pub struct Binding {
    pub policy: Value,
    pub binding: Value,
}

/// The bindings that act (`Deny`), each with the policy it names, from the stored objects.
pub fn denying(bindings: Vec<Value>, policy: impl Fn(&str) -> Option<Value>) -> Vec<Binding> {
    bindings
        .into_iter()
        .filter(|b| contains(&b["spec"]["validationActions"], "Deny"))
        .filter_map(|binding| {
            let policy = policy(binding["spec"]["policyName"].as_str()?)?;
            Some(Binding { policy, binding })
        })
        .collect()
}

/// Admit `object` (and `old` on an update) of `rt` under `bindings`, or refuse it as the API
/// server would.
pub fn admit(
    bindings: &[Binding],
    rt: &ResourceType,
    version: &str,
    operation: &str,
    object: &Value,
    old: Option<&Value>,
) -> Result<(), ApiError> {
    for Binding { policy, binding } in bindings {
        let policy_name = policy["metadata"]["name"].as_str().unwrap_or("");
        let spec = &policy["spec"];
        let matched = spec["matchConstraints"]["resourceRules"]
            .as_array()
            .is_some_and(|rules| {
                rules
                    .iter()
                    .any(|r| rule_matches(r, rt, version, operation))
            });
        if !matched {
            continue;
        }
        let mut evaluator =
            VapEvaluator::builder()
                .object(object.clone())
                .request(AdmissionRequest {
                    operation: operation.to_owned(),
                    name: object["metadata"]["name"].as_str().unwrap_or("").to_owned(),
                    namespace: object["metadata"]["namespace"]
                        .as_str()
                        .unwrap_or("")
                        .to_owned(),
                    kind: GroupVersionKind {
                        group: rt.group.clone(),
                        version: version.to_owned(),
                        kind: rt.kind.clone(),
                    },
                    resource: GroupVersionResource {
                        group: rt.group.clone(),
                        version: version.to_owned(),
                        resource: rt.plural.clone(),
                    },
                    ..Default::default()
                });
        if let Some(old) = old {
            evaluator = evaluator.old_object(old.clone());
        }
        let evaluator = evaluator.build();
        let expressions = |key: &str, expression: &str| -> Vec<VapExpression> {
            spec[key]
                .as_array()
                .map(|items| {
                    items
                        .iter()
                        .map(|v| VapExpression {
                            expression: v[expression].as_str().unwrap_or("").to_owned(),
                            message: v["message"].as_str().map(str::to_owned),
                            message_expression: v["messageExpression"].as_str().map(str::to_owned),
                        })
                        .collect()
                })
                .unwrap_or_default()
        };
        let conditions = evaluator.evaluate(&expressions("matchConditions", "expression"));
        if !conditions.iter().all(|c| c.passed) {
            continue;
        }
        let validations = spec["validations"].as_array().cloned().unwrap_or_default();
        let results = evaluator.evaluate(&expressions("validations", "expression"));
        if let Some((index, failed)) = results.iter().enumerate().find(|(_, r)| !r.passed) {
            let reason = validations[index]["reason"].as_str().unwrap_or("Invalid");
            let (code, reason) = match reason {
                "Forbidden" => (403, "Forbidden"),
                "Unauthorized" => (401, "Unauthorized"),
                "RequestEntityTooLarge" => (413, "RequestEntityTooLarge"),
                _ => (422, "Invalid"),
            };
            let name = object["metadata"]["name"].as_str().unwrap_or("");
            let resource = if rt.group.is_empty() {
                rt.plural.clone()
            } else {
                format!("{}.{}", rt.plural, rt.group)
            };
            return Err(ApiError::new(
                code,
                reason,
                format!(
                    "{resource} \"{name}\" is forbidden: ValidatingAdmissionPolicy '{policy_name}' with binding '{}' denied request: {}",
                    binding["metadata"]["name"].as_str().unwrap_or(""),
                    failed.message.clone().unwrap_or_default()
                ),
            ));
        }
    }
    Ok(())
}
