#![allow(clippy::expect_used, clippy::unwrap_used)] // Tests: a failed expectation is the report.

//! The checked-in CRD YAML is what the Rust types generate, and the schema is
//! fit for `kubectl explain` and server-side apply.

use std::path::PathBuf;

use serde_json::Value;

fn chart_crds() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../charts/hermes/crds")
}

#[test]
fn checked_in_crd_yaml_is_up_to_date() {
    let files = hermes_crds::crd_files().expect("CRDs serialize");
    assert_eq!(files.len(), 2);
    for (name, text) in files {
        let path = chart_crds().join(&name);
        let on_disk =
            std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        assert!(
            on_disk == text,
            "{} is stale: run `cargo run -p hermes-crds --bin crdgen` and commit the result",
            path.display()
        );
    }
    let mut listed: Vec<_> = std::fs::read_dir(chart_crds())
        .expect("chart CRD folder")
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    listed.sort();
    assert_eq!(
        listed,
        [
            "hermesprofiles.hermes.dev.yaml",
            "hermestasks.hermes.dev.yaml"
        ],
        "charts/hermes/crds holds exactly the generated CRDs"
    );
}

/// Walks a schema and returns the paths of properties without a description.
fn undocumented(schema: &Value, path: &str, out: &mut Vec<String>) {
    if let Some(props) = schema.get("properties").and_then(Value::as_object) {
        for (name, sub) in props {
            let p = format!("{path}.{name}");
            // Kubernetes documents metadata, apiVersion and kind itself.
            let builtin =
                path.is_empty() && ["metadata", "apiVersion", "kind"].contains(&name.as_str());
            let inside_k8s_type = path.contains(".conditions")
                || path.contains(".resources")
                || path.ends_with("Time");
            if !builtin
                && !inside_k8s_type
                && sub
                    .get("description")
                    .and_then(Value::as_str)
                    .is_none_or(str::is_empty)
            {
                out.push(p.clone());
            }
            undocumented(sub, &p, out);
        }
    }
    if let Some(items) = schema.get("items") {
        undocumented(items, &format!("{path}[]"), out);
    }
}

#[test]
fn every_field_has_a_description_for_kubectl_explain() {
    for crd in hermes_crds::crds() {
        for version in &crd.spec.versions {
            let schema = version
                .schema
                .as_ref()
                .and_then(|s| s.open_api_v3_schema.as_ref())
                .expect("schema");
            let value = serde_json::to_value(schema).expect("schema as JSON");
            let mut missing = Vec::new();
            undocumented(&value, "", &mut missing);
            assert!(
                missing.is_empty(),
                "{}: fields without a doc comment: {missing:?}",
                crd.spec.names.kind
            );
        }
    }
}

#[test]
fn task_has_status_subresource_short_name_and_printer_columns() {
    let crd = hermes_crds::crds()
        .into_iter()
        .find(|c| c.spec.names.kind == "HermesTask")
        .expect("task CRD");
    assert_eq!(
        crd.spec.names.short_names.as_deref(),
        Some(&["ht".to_owned()][..])
    );
    let v = &crd.spec.versions[0];
    assert!(
        v.subresources
            .as_ref()
            .and_then(|s| s.status.as_ref())
            .is_some()
    );
    let cols: Vec<(&str, i32)> = v
        .additional_printer_columns
        .as_deref()
        .unwrap_or_default()
        .iter()
        .map(|c| (c.name.as_str(), c.priority.unwrap_or(0)))
        .collect();
    assert_eq!(
        cols,
        [
            ("Phase", 0),
            ("Verdict", 0),
            ("Branch", 0),
            ("Age", 0),
            ("Profile", 1),
            ("Head", 1)
        ]
    );
}

#[test]
fn a_minimal_task_serializes_without_nulls() {
    let task: hermes_crds::HermesTask = serde_json::from_value(serde_json::json!({
        "apiVersion": "hermes.dev/v1alpha1",
        "kind": "HermesTask",
        "metadata": {"name": "t"},
        "spec": {
            "repo": {"url": "https://git.example.com/o/r.git", "baseRef": "main"},
            "task": "do it",
            "scope": ["src/**"]
        }
    }))
    .expect("a minimal task parses");
    let text = serde_json::to_string(&task).expect("serializes");
    assert!(!text.contains("null"), "{text}");
}
