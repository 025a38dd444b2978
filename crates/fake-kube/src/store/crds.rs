//! Custom resource types: registered from a CRD (its versions, scope, schema, printer columns
//! and status subresource) and served from then on, until the CRD goes.

use crate::types::{PrinterColumn, ResourceType};
use serde_json::Value;

use super::*;

impl Store {
    /// Register a custom resource type from a CRD object.
    pub fn register_crd(&self, crd: &Value) {
        let spec = &crd["spec"];
        let versions: Vec<String> = spec["versions"]
            .as_array()
            .map(|vs| {
                vs.iter()
                    .filter(|v| v["served"].as_bool().unwrap_or(true))
                    .filter_map(|v| v["name"].as_str().map(str::to_owned))
                    .collect()
            })
            .unwrap_or_default();
        let first = &spec["versions"][0];
        let columns = first["additionalPrinterColumns"]
            .as_array()
            .map(|cols| {
                cols.iter()
                    .map(|c| PrinterColumn {
                        name: c["name"].as_str().unwrap_or("").to_owned(),
                        kind: c["type"].as_str().unwrap_or("string").to_owned(),
                        json_path: c["jsonPath"].as_str().unwrap_or("").to_owned(),
                        priority: c["priority"].as_i64().unwrap_or(0),
                    })
                    .collect()
            })
            .unwrap_or_default();
        let rt = ResourceType {
            group: spec["group"].as_str().unwrap_or("").to_owned(),
            versions,
            kind: spec["names"]["kind"].as_str().unwrap_or("").to_owned(),
            plural: spec["names"]["plural"].as_str().unwrap_or("").to_owned(),
            singular: spec["names"]["singular"].as_str().unwrap_or("").to_owned(),
            namespaced: spec["scope"].as_str() != Some("Cluster"),
            status_subresource: first["subresources"]["status"].is_object(),
            short_names: spec["names"]["shortNames"]
                .as_array()
                .map(|s| {
                    s.iter()
                        .filter_map(|n| n.as_str().map(str::to_owned))
                        .collect()
                })
                .unwrap_or_default(),
            categories: spec["names"]["categories"]
                .as_array()
                .map(|c| {
                    c.iter()
                        .filter_map(|n| n.as_str().map(str::to_owned))
                        .collect()
                })
                .unwrap_or_default(),
            printer_columns: columns,
            schema: first["schema"]["openAPIV3Schema"]
                .is_object()
                .then(|| first["schema"]["openAPIV3Schema"].clone()),
        };
        let mut types = super::write(&self.types);
        types.retain(|t| !(t.group == rt.group && t.plural == rt.plural));
        types.push(rt);
    }

    /// Stop serving a CRD's type: its objects go (each with its watch event), then the type.
    pub fn unregister_crd(&self, crd: &Value) {
        let group = crd["spec"]["group"].as_str().unwrap_or("").to_owned();
        let plural = crd["spec"]["names"]["plural"]
            .as_str()
            .unwrap_or("")
            .to_owned();
        let Some(rt) = self.find_type(&group, &plural) else {
            return;
        };
        let table = self.table(&rt);
        let mut table = super::write(&table);
        let doomed: Vec<(String, String)> = table.keys().cloned().collect();
        for (ns, name) in doomed {
            self.remove_from(&mut table, &rt, &ns, &name);
        }
        super::write(&self.types).retain(|t| !(t.group == group && t.plural == plural));
        super::write(&self.tables).remove(&rt.key());
    }
}
