//! The Helm chart, `charts/hermes`.
//!
//! Without a cluster: `helm lint --strict` and `helm template` for each
//! notable set of values, the values schema's refusals, the rendered RBAC and
//! pod, and that the generated and copied parts are current.
//! On Tier A: each value set rendered, validated by kubeconform `-strict`
//! against schemas generated from the API server's `/openapi/v3`, and by the
//! API server itself (`kubectl apply --dry-run=server --validate=strict`).
//! On Tier B: install, upgrade to two replicas (one leader), to
//! namespace-limited mode, uninstall (CRDs and tasks stay) and reinstall.
//!
//! The Tier B test leaves the release `hermes` in `hermes-system` installed
//! with the chart's defaults and the operator image under test: exactly what
//! the `tier_b` suite's `deploy_operator` installs, so that suite's upgrade
//! changes nothing. It runs every step on that one release, so no two
//! operators ever act on the same namespaces.

use std::collections::BTreeSet;
use std::io::{Read as _, Write as _};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use hermes_crds::task::HermesTask;
use hermes_e2e::chart::{self, OPERATOR, RELEASE, RELEASE_NAMESPACE, Tools};
use hermes_e2e::tier_b::Images;
use hermes_e2e::{Cluster, TEST_FIELD_MANAGER, Tier, repo_root};
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, ListParams, Patch, PatchParams};
use serde_json::{Value, json};

fn tools() -> &'static Tools {
    static TOOLS: OnceLock<Tools> = OnceLock::new();
    TOOLS.get_or_init(|| match Tools::resolve() {
        Ok(t) => t,
        Err(e) => panic!("helm and kubeconform (e2e/cluster/build.sh tools): {e}"),
    })
}

/// The notable value sets: name and `helm` arguments.
fn value_sets() -> Vec<(&'static str, Vec<String>)> {
    value_sets_in("team-a", "team-b")
}

/// The value sets with `a` and `b` as the watched namespaces.
fn value_sets_in(a: &str, b: &str) -> Vec<(&'static str, Vec<String>)> {
    let watch = format!("watchNamespaces={{{a},{b}}}");
    let profile_ns = format!("defaultProfile.namespaces={{{a}}}");
    let set = |pairs: &[&str]| -> Vec<String> {
        pairs
            .iter()
            .flat_map(|p| ["--set".to_owned(), (*p).to_owned()])
            .collect()
    };
    vec![
        ("default", vec![]),
        ("two-replicas", set(&["replicaCount=2"])),
        ("watch-namespaces", set(&[&watch])),
        (
            "service-monitor",
            set(&["metrics.serviceMonitor.enabled=true"]),
        ),
        (
            "default-profile",
            set(&["defaultProfile.enabled=true", &profile_ns]),
        ),
        (
            "everything",
            set(&[
                "replicaCount=2",
                &watch,
                "metrics.serviceMonitor.enabled=true",
                "metrics.serviceMonitor.labels.release=prometheus",
                "defaultProfile.enabled=true",
                "logFormat=text",
                "podLabels.team=platform",
                "podAnnotations.example\\.com/owner=platform",
                "imagePullSecrets={regcred}",
                "nodeSelector.kubernetes\\.io/os=linux",
                "tolerations[0].key=dedicated",
                "tolerations[0].operator=Exists",
                "affinity.podAntiAffinity.preferredDuringSchedulingIgnoredDuringExecution[0].weight=100",
                "affinity.podAntiAffinity.preferredDuringSchedulingIgnoredDuringExecution[0].podAffinityTerm.topologyKey=kubernetes.io/hostname",
            ]),
        ),
    ]
}

fn render(args: &[String]) -> Vec<Value> {
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let text = match tools().template(&args) {
        Ok(t) => t,
        Err(e) => panic!("helm template {args:?}: {e}"),
    };
    match chart::documents(&text) {
        Ok(d) => d,
        Err(e) => panic!("{e}\n{text}"),
    }
}

fn template_error(args: &[&str]) -> String {
    match tools().template(args) {
        Ok(text) => panic!("helm template {args:?} rendered, expected an error:\n{text}"),
        Err(e) => e,
    }
}

fn kinds(docs: &[Value]) -> Vec<String> {
    docs.iter()
        .map(|d| {
            format!(
                "{}/{}",
                d["kind"].as_str().unwrap_or_default(),
                d["metadata"]["name"].as_str().unwrap_or_default()
            )
        })
        .collect()
}

#[test]
fn chart_version_and_app_version_follow_the_workspace() {
    let text = std::fs::read_to_string(chart::chart_dir().join("Chart.yaml")).unwrap_or_default();
    let chart: Value = serde_yaml::from_str(&text).unwrap_or(Value::Null);
    let workspace = env!("CARGO_PKG_VERSION");
    assert_eq!(chart["apiVersion"], json!("v2"));
    assert_eq!(chart["version"], json!(workspace), "Chart.yaml version");
    assert_eq!(
        chart["appVersion"],
        json!(workspace),
        "Chart.yaml appVersion"
    );
}

#[test]
fn values_schema_generated_parts_are_current() {
    let want = match chart::values_schema_generated() {
        Ok(t) => t,
        Err(e) => panic!("{e}"),
    };
    let have =
        std::fs::read_to_string(chart::chart_dir().join("values.schema.json")).unwrap_or_default();
    assert!(
        have == want,
        "charts/hermes/values.schema.json is stale: run `cargo run -p hermes-e2e --bin chart-values-schema`"
    );
}

/// Every object in the values schema either lists its properties and
/// refuses others, or is a map whose values have a schema: no level takes
/// arbitrary keys.
#[test]
fn values_schema_is_strict_at_every_level() {
    fn walk(s: &Value, path: &str, bad: &mut Vec<String>) {
        match s {
            Value::Object(m) => {
                if m.contains_key("properties")
                    && m.get("additionalProperties") != Some(&json!(false))
                {
                    bad.push(format!(
                        "{path}: properties without additionalProperties: false"
                    ));
                }
                if m.get("type") == Some(&json!("object"))
                    && !m.contains_key("properties")
                    && !m.get("additionalProperties").is_some_and(Value::is_object)
                {
                    bad.push(format!("{path}: an object of any shape"));
                }
                for (k, v) in m {
                    match k.as_str() {
                        "properties" => {
                            for (name, p) in v.as_object().into_iter().flatten() {
                                walk(p, &format!("{path}/{name}"), bad);
                            }
                        }
                        "enum" | "required" | "type" | "const" => {}
                        _ => walk(v, &format!("{path}.{k}"), bad),
                    }
                }
            }
            Value::Array(items) => {
                for (i, v) in items.iter().enumerate() {
                    walk(v, &format!("{path}[{i}]"), bad);
                }
            }
            _ => {}
        }
    }
    let text =
        std::fs::read_to_string(chart::chart_dir().join("values.schema.json")).unwrap_or_default();
    let schema: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
    assert!(schema.is_object(), "values.schema.json does not parse");
    let mut bad = Vec::new();
    walk(&schema, "", &mut bad);
    assert!(bad.is_empty(), "{bad:#?}");
    assert_eq!(schema["properties"]["replicaCount"]["minimum"], json!(1));
    assert_eq!(schema["properties"]["replicaCount"]["maximum"], json!(2));
}

#[test]
fn default_profile_values_are_the_example_profile() {
    let read = |p: &str| -> Value {
        let text = std::fs::read_to_string(repo_root().join(p)).unwrap_or_default();
        serde_yaml::from_str(&text).unwrap_or(Value::Null)
    };
    let values = read("charts/hermes/values.yaml");
    let example = read("examples/profile-default.yaml");
    assert!(!example["spec"].is_null());
    assert_eq!(values["defaultProfile"]["spec"], example["spec"]);
    assert_eq!(
        values["defaultProfile"]["name"],
        example["metadata"]["name"]
    );
}

#[test]
fn helm_lint_passes_for_every_value_set() {
    let dir = chart::chart_dir();
    for (name, args) in value_sets() {
        let mut all = vec![
            "lint".to_owned(),
            "--strict".to_owned(),
            dir.to_string_lossy().into_owned(),
        ];
        all.extend(args);
        let out = tools().helm(&all);
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success() && text.contains("1 chart(s) linted, 0 chart(s) failed"),
            "helm lint ({name}):\n{text}{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

#[test]
fn values_schema_refuses_bad_values_with_the_key_path() {
    for (args, expect) in [
        (
            &["--set", "replicaCount=3"][..],
            &["/replicaCount", "maximum"][..],
        ),
        (&["--set", "replicaCount=0"], &["/replicaCount", "minimum"]),
        (
            &["--set-string", "replicaCount=two"],
            &["/replicaCount", "got string, want integer"],
        ),
        (
            &["--set", "replicas=2"],
            &["additional properties 'replicas'"],
        ),
        (
            &["--set", "image.tagg=x"],
            &["/image", "additional properties 'tagg'"],
        ),
        (
            &["--set", "image.pullPolicy=Sometimes"],
            &["/image/pullPolicy"],
        ),
        (
            &["--set", "watchNamespaces={Team_A}"],
            &["/watchNamespaces/0", "does not match pattern"],
        ),
        (
            &["--set", "watchNamespaces={a,a}"],
            &["/watchNamespaces", "items at 0 and 1 are equal"],
        ),
        (
            &["--set", "metrics.serviceMonitor.enabled=yes"],
            &["/metrics/serviceMonitor/enabled", "want boolean"],
        ),
        (
            &["--set", "defaultProfile.spec.agent.imagee=x"],
            &[
                "/defaultProfile/spec/agent",
                "additional properties 'imagee'",
            ],
        ),
        (
            &["--set", "affinity.nodeAffinty.x=1"],
            &["/affinity", "additional properties 'nodeAffinty'"],
        ),
    ] {
        let err = template_error(args);
        assert!(
            err.contains("values don't meet the specifications of the schema"),
            "{args:?}: not a schema error: {err}"
        );
        for e in expect {
            assert!(err.contains(e), "{args:?}: expected {e:?} in: {err}");
        }
    }
}

#[test]
fn rendered_rbac_grants_no_secret_access_and_no_wildcards() {
    for (name, args) in value_sets() {
        let docs = render(&args);
        let rules = chart::rbac_rules(&docs);
        assert!(!rules.is_empty(), "{name}: no RBAC rendered");
        for (role, rule) in rules {
            let list = |k: &str| -> Vec<String> {
                rule[k]
                    .as_array()
                    .map(|a| {
                        a.iter()
                            .filter_map(|v| v.as_str().map(str::to_owned))
                            .collect()
                    })
                    .unwrap_or_default()
            };
            for r in list("resources") {
                assert!(
                    !r.starts_with("secrets") && r != "*",
                    "{name}: {role} grants {r}"
                );
            }
            assert!(!list("verbs").contains(&"*".to_owned()), "{name}: {role}");
            assert!(
                !list("apiGroups").contains(&"*".to_owned()),
                "{name}: {role}"
            );
            assert!(rule.get("nonResourceURLs").is_none(), "{name}: {role}");
            // Pods are read only.
            if list("resources").contains(&"pods".to_owned()) {
                assert_eq!(list("verbs"), ["get", "list", "watch"], "{name}: {role}");
            }
        }
    }
}

#[test]
fn cluster_wide_by_default_with_one_cluster_role() {
    let docs = render(&[]);
    let by = chart::by_kind(&docs);
    let names = |k: &str| -> Vec<String> {
        by.get(k)
            .map(|v| {
                v.iter()
                    .map(|d| {
                        format!(
                            "{}/{}",
                            d["metadata"]["namespace"].as_str().unwrap_or("-"),
                            d["metadata"]["name"].as_str().unwrap_or_default()
                        )
                    })
                    .collect()
            })
            .unwrap_or_default()
    };
    assert_eq!(
        names("ClusterRole"),
        ["-/hermes-operator", "-/hermes-operator-nodes"]
    );
    assert_eq!(
        names("ClusterRoleBinding"),
        ["-/hermes-operator", "-/hermes-operator-nodes"]
    );
    let roles = [
        "default/hermes-operator-api-addresses",
        "hermes-system/hermes-operator-leader",
    ];
    assert_eq!(names("Role"), roles);
    assert_eq!(names("RoleBinding"), roles);
    assert_eq!(names("ServiceAccount"), ["hermes-system/hermes-operator"]);
    assert_eq!(names("Service"), ["hermes-system/hermes-operator-metrics"]);
    assert_eq!(names("Deployment"), ["hermes-system/hermes-operator"]);
    assert!(!by.contains_key("ServiceMonitor"), "{:?}", kinds(&docs));
    assert!(!by.contains_key("HermesProfile"), "{:?}", kinds(&docs));
    assert!(
        !by.contains_key("Namespace"),
        "the chart must not create namespaces"
    );
    let env = &by["Deployment"][0]["spec"]["template"]["spec"]["containers"][0]["env"];
    assert!(
        !env.as_array()
            .into_iter()
            .flatten()
            .any(|e| e["name"] == "HERMES_WATCH_NAMESPACE"),
        "cluster-wide mode sets no watch list: {env}"
    );
    // The binding names the release's ServiceAccount.
    assert_eq!(
        by["ClusterRoleBinding"][0]["subjects"],
        json!([{"kind": "ServiceAccount", "name": "hermes-operator", "namespace": "hermes-system"}])
    );
}

/// The addresses no CIDR rule reaches: the API server's, read by name in
/// `default`, and the nodes', read cluster-wide unless turned off (then
/// nothing cluster-wide is left in namespace-limited mode); the extra
/// ranges reach the operator as its environment.
#[test]
fn the_cluster_address_readers_grant_reads_by_name_and_nodes_only_when_asked() {
    let docs = render(&[]);
    let by = chart::by_kind(&docs);
    let role = |kind: &str, name: &str| -> Value {
        by[kind]
            .iter()
            .find(|d| d["metadata"]["name"] == name)
            .map(|d| d["rules"].clone())
            .unwrap_or_default()
    };
    assert_eq!(
        role("Role", "hermes-operator-api-addresses"),
        json!([
            {"apiGroups": [""], "resources": ["services"], "resourceNames": ["kubernetes"],
             "verbs": ["get", "list", "watch"]},
            {"apiGroups": ["discovery.k8s.io"], "resources": ["endpointslices"],
             "resourceNames": ["kubernetes"], "verbs": ["get", "list", "watch"]},
        ])
    );
    assert_eq!(
        role("ClusterRole", "hermes-operator-nodes"),
        json!([{"apiGroups": [""], "resources": ["nodes"], "verbs": ["get", "list", "watch"]}])
    );
    let env_of = |docs: &[Value]| -> Vec<Value> {
        chart::by_kind(docs)["Deployment"][0]["spec"]["template"]["spec"]["containers"][0]["env"]
            .as_array()
            .cloned()
            .unwrap_or_default()
            .into_iter()
            .filter(|e| {
                e["name"]
                    .as_str()
                    .is_some_and(|n| n.starts_with("HERMES_EXCEPT"))
            })
            .collect()
    };
    assert_eq!(env_of(&docs), Vec::<Value>::new());
    let docs = render(&[
        "--set".into(),
        "watchNamespaces={team-a}".into(),
        "--set".into(),
        "networkPolicy.exceptNodeAddresses=false".into(),
        "--set".into(),
        "networkPolicy.exceptCidrs={10.0.0.0/16,fd00:10::/64}".into(),
    ]);
    let by = chart::by_kind(&docs);
    assert!(
        !by.contains_key("ClusterRole") && !by.contains_key("ClusterRoleBinding"),
        "{:?}",
        kinds(&docs)
    );
    assert_eq!(
        env_of(&docs),
        [
            json!({"name": "HERMES_EXCEPT_CIDRS", "value": "10.0.0.0/16,fd00:10::/64"}),
            json!({"name": "HERMES_EXCEPT_NODE_ADDRESSES", "value": "false"}),
        ]
    );
    let bad = template_error(&["--set", "networkPolicy.exceptCidrs={node-subnet}"]);
    assert!(bad.contains("exceptCidrs"), "{bad}");
}

#[test]
fn watch_namespaces_renders_roles_only() {
    let docs = render(&["--set".into(), "watchNamespaces={team-a,team-b}".into()]);
    let by = chart::by_kind(&docs);
    // Cluster-wide, nothing but the node reader (the nodes' addresses).
    let cluster_wide: Vec<&Value> = ["ClusterRole", "ClusterRoleBinding"]
        .iter()
        .flat_map(|k| by.get(*k).into_iter().flatten())
        .map(|d| &d["metadata"]["name"])
        .collect();
    assert_eq!(
        cluster_wide,
        [
            &json!("hermes-operator-nodes"),
            &json!("hermes-operator-nodes")
        ],
        "namespace-limited mode rendered cluster-wide RBAC: {:?}",
        kinds(&docs)
    );
    let placed = |k: &str| -> BTreeSet<(String, String)> {
        by.get(k)
            .into_iter()
            .flatten()
            .map(|d| {
                (
                    d["metadata"]["namespace"]
                        .as_str()
                        .unwrap_or("-")
                        .to_owned(),
                    d["metadata"]["name"]
                        .as_str()
                        .unwrap_or_default()
                        .to_owned(),
                )
            })
            .collect()
    };
    let want: BTreeSet<(String, String)> = [
        ("default", "hermes-operator-api-addresses"),
        ("hermes-system", "hermes-operator-leader"),
        ("team-a", "hermes-operator"),
        ("team-b", "hermes-operator"),
    ]
    .iter()
    .map(|(a, b)| ((*a).to_owned(), (*b).to_owned()))
    .collect();
    assert_eq!(placed("Role"), want);
    assert_eq!(placed("RoleBinding"), want);
    // The namespace Roles grant what the ClusterRole would, and the Lease
    // Role nothing but Leases.
    let cluster_rules = chart::by_kind(&render(&[]))["ClusterRole"][0]["rules"].clone();
    for role in &by["Role"] {
        if role["metadata"]["name"] == "hermes-operator" {
            assert_eq!(role["rules"], cluster_rules);
        } else if role["metadata"]["name"] == "hermes-operator-api-addresses" {
            assert_eq!(role["metadata"]["namespace"], "default");
        } else {
            assert_eq!(role["rules"][0]["resources"], json!(["leases"]));
            assert_eq!(role["rules"].as_array().map(Vec::len), Some(1));
        }
    }
    let env = &by["Deployment"][0]["spec"]["template"]["spec"]["containers"][0]["env"];
    let watch: Vec<&Value> = env
        .as_array()
        .into_iter()
        .flatten()
        .filter(|e| e["name"] == "HERMES_WATCH_NAMESPACE")
        .collect();
    assert_eq!(
        watch,
        [&json!({"name": "HERMES_WATCH_NAMESPACE", "value": "team-a,team-b"})]
    );
}

#[test]
fn operator_pod_is_restricted_and_only_its_container_gets_a_token() {
    for (name, args) in value_sets() {
        let docs = render(&args);
        let by = chart::by_kind(&docs);
        let deployment = &by["Deployment"][0];
        let pod = &deployment["spec"]["template"]["spec"];
        assert_eq!(pod["automountServiceAccountToken"], json!(false), "{name}");
        assert_eq!(pod["enableServiceLinks"], json!(false), "{name}");
        assert_eq!(
            pod["securityContext"],
            json!({"runAsNonRoot": true, "runAsUser": 65532, "runAsGroup": 65532,
                   "seccompProfile": {"type": "RuntimeDefault"}}),
            "{name}"
        );
        let containers = pod["containers"].as_array().cloned().unwrap_or_default();
        assert_eq!(containers.len(), 1, "{name}");
        let c = &containers[0];
        assert_eq!(
            c["securityContext"],
            json!({"allowPrivilegeEscalation": false, "readOnlyRootFilesystem": true,
                   "capabilities": {"drop": ["ALL"]}}),
            "{name}"
        );
        assert_eq!(
            c["readinessProbe"]["httpGet"],
            json!({"path": "/readyz", "port": "metrics"})
        );
        assert_eq!(
            c["livenessProbe"]["httpGet"],
            json!({"path": "/healthz", "port": "metrics"})
        );
        assert_eq!(c["ports"][0]["name"], json!("metrics"));
        assert!(
            c["resources"]["limits"]["memory"].is_string(),
            "{name}: no memory limit"
        );
        assert_eq!(
            c["volumeMounts"],
            json!([{"name": "api-token", "mountPath": "/var/run/secrets/kubernetes.io/serviceaccount", "readOnly": true}])
        );
        let token = &pod["volumes"][0]["projected"]["sources"][0]["serviceAccountToken"];
        assert_eq!(token["expirationSeconds"], json!(3600), "{name}");
        let env: Vec<String> = c["env"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|e| e["name"].as_str().map(str::to_owned))
            .collect();
        for want in ["POD_NAME", "POD_NAMESPACE", "HERMES_METRICS_ADDR"] {
            assert!(env.contains(&want.to_owned()), "{name}: no {want}");
        }
        let replicas = if args.iter().any(|a| a == "replicaCount=2") {
            2
        } else {
            1
        };
        assert_eq!(deployment["spec"]["replicas"], json!(replicas), "{name}");
        assert_eq!(
            by["ServiceAccount"][0]["automountServiceAccountToken"],
            json!(false)
        );
    }
}

#[test]
fn image_defaults_to_app_version_and_if_not_present() {
    let docs = render(&[]);
    let c = &chart::by_kind(&docs)["Deployment"][0]["spec"]["template"]["spec"]["containers"][0];
    assert_eq!(
        c["image"],
        json!(format!(
            "hermes.local/operator:{}",
            env!("CARGO_PKG_VERSION")
        ))
    );
    assert_eq!(c["imagePullPolicy"], json!("IfNotPresent"));
    let docs = render(&[
        "--set".into(),
        "image.tag=0123456789ab".into(),
        "--set".into(),
        "image.pullPolicy=Never".into(),
    ]);
    let c = &chart::by_kind(&docs)["Deployment"][0]["spec"]["template"]["spec"]["containers"][0];
    assert_eq!(c["image"], json!("hermes.local/operator:0123456789ab"));
    assert_eq!(c["imagePullPolicy"], json!("Never"));
}

#[test]
fn service_monitor_only_when_enabled_and_selects_the_metrics_service() {
    let docs = render(&[
        "--set".into(),
        "metrics.serviceMonitor.enabled=true".into(),
        "--set".into(),
        "metrics.serviceMonitor.labels.release=prometheus".into(),
    ]);
    let by = chart::by_kind(&docs);
    let sm = &by["ServiceMonitor"][0];
    let svc = &by["Service"][0];
    assert_eq!(sm["apiVersion"], json!("monitoring.coreos.com/v1"));
    assert_eq!(sm["metadata"]["labels"]["release"], json!("prometheus"));
    // Its selector matches the Service's labels; its port is the Service's.
    let selector = sm["spec"]["selector"]["matchLabels"]
        .as_object()
        .cloned()
        .unwrap_or_default();
    assert!(!selector.is_empty());
    for (k, v) in &selector {
        assert_eq!(&svc["metadata"]["labels"][k], v, "label {k}");
    }
    assert_eq!(
        sm["spec"]["endpoints"][0]["port"],
        svc["spec"]["ports"][0]["name"]
    );
    assert_eq!(sm["spec"]["endpoints"][0]["path"], json!("/metrics"));
    assert_eq!(
        sm["spec"]["namespaceSelector"]["matchNames"],
        json!(["hermes-system"])
    );
    // The Service reaches the operator's metrics port.
    let pod_labels = &by["Deployment"][0]["spec"]["template"]["metadata"]["labels"];
    for (k, v) in svc["spec"]["selector"].as_object().into_iter().flatten() {
        assert_eq!(&pod_labels[k], v);
    }
    assert_eq!(svc["spec"]["ports"][0]["targetPort"], json!("metrics"));
}

#[test]
fn default_profile_goes_to_its_namespaces_else_the_watched_ones_and_never_guesses() {
    let profiles = |args: &[&str]| -> Vec<String> {
        let args: Vec<String> = args.iter().map(|s| (*s).to_owned()).collect();
        chart::by_kind(&render(&args))
            .get("HermesProfile")
            .into_iter()
            .flatten()
            .map(|d| {
                format!(
                    "{}/{}",
                    d["metadata"]["namespace"].as_str().unwrap_or_default(),
                    d["metadata"]["name"].as_str().unwrap_or_default()
                )
            })
            .collect()
    };
    assert_eq!(
        profiles(&[
            "--set",
            "defaultProfile.enabled=true",
            "--set",
            "defaultProfile.namespaces={x,y}"
        ]),
        ["x/default", "y/default"]
    );
    assert_eq!(
        profiles(&[
            "--set",
            "defaultProfile.enabled=true",
            "--set",
            "watchNamespaces={a,b}"
        ]),
        ["a/default", "b/default"]
    );
    assert_eq!(
        profiles(&[
            "--set",
            "defaultProfile.enabled=true",
            "--set",
            "watchNamespaces={a,b}",
            "--set",
            "defaultProfile.namespaces={b}",
            "--set",
            "defaultProfile.name=standard",
        ]),
        ["b/standard"]
    );
    assert!(profiles(&["--set", "watchNamespaces={a}"]).is_empty());
    let err = template_error(&["--set", "defaultProfile.enabled=true"]);
    assert!(
        err.contains("defaultProfile.enabled needs defaultProfile.namespaces"),
        "{err}"
    );
    // The spec is the values' spec.
    let docs = render(&[
        "--set".into(),
        "defaultProfile.enabled=true".into(),
        "--set".into(),
        "defaultProfile.namespaces={x}".into(),
    ]);
    let values: Value = serde_yaml::from_str(
        &std::fs::read_to_string(chart::chart_dir().join("values.yaml")).unwrap_or_default(),
    )
    .unwrap_or(Value::Null);
    assert_eq!(
        chart::by_kind(&docs)["HermesProfile"][0]["spec"],
        values["defaultProfile"]["spec"]
    );
}

// ---------------------------------------------------------------------------
// Tier A: strict validation, offline schemas and the API server.

/// Renders `args` into `namespace` as one YAML stream.
fn render_for_validation(namespace: &str, args: &[String]) -> (String, Vec<Value>) {
    let mut all = vec!["--namespace".to_owned(), namespace.to_owned()];
    all.extend(args.iter().cloned());
    let docs = render(&all);
    let mut stream = String::new();
    for d in &docs {
        stream.push_str("---\n");
        stream.push_str(&serde_yaml::to_string(d).unwrap_or_default());
    }
    (stream, docs)
}

#[tokio::test]
async fn every_value_set_validates_strictly_offline_and_against_the_api_server() {
    let Some(cluster) = Cluster::connect().await else {
        return;
    };
    if let Err(e) = cluster.install_crds().await {
        panic!("installing the CRDs: {e}");
    }
    // The Prometheus Operator's ServiceMonitor CRD (generated from its API
    // types by build.sh tools), so the ServiceMonitor is validated like the rest.
    let crd = tools().servicemonitor_crd.to_string_lossy().into_owned();
    kubectl_ok(
        &cluster,
        &[
            "apply",
            "--server-side",
            "--field-manager",
            TEST_FIELD_MANAGER,
            "-f",
            &crd,
        ],
    );
    kubectl_ok(
        &cluster,
        &[
            "wait",
            "--for",
            "condition=Established",
            "--timeout",
            "60s",
            "crd/servicemonitors.monitoring.coreos.com",
        ],
    );
    // The API server publishes a new CRD's OpenAPI a moment after it is
    // Established.
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let index =
            String::from_utf8_lossy(&cluster.kubectl(["get", "--raw", "/openapi/v3"]).stdout)
                .into_owned();
        if index.contains("apis/monitoring.coreos.com/v1\"")
            && index.contains("apis/hermes.dev/v1alpha1\"")
        {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "/openapi/v3 does not list the CRDs' groups: {index}"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let schemas = std::env::temp_dir().join(format!("hermes-kube-schemas-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&schemas);
    let written = match chart::kube_schemas(&cluster, &schemas) {
        Ok(n) => n,
        Err(e) => panic!("generating schemas from Tier A: {e}"),
    };
    assert!(written > 50, "only {written} schemas");
    for must in [
        "apps/deployment_v1.json",
        "hermes.dev/hermesprofile_v1alpha1.json",
        "v1/service_v1.json",
        "monitoring.coreos.com/servicemonitor_v1.json",
    ] {
        assert!(schemas.join(must).exists(), "no schema {must}");
    }
    // The namespaces the manifests name must exist for the server's dry run.
    let mut guards = Vec::new();
    for prefix in ["chart-rel", "chart-a", "chart-b"] {
        match cluster.namespace(prefix).await {
            Ok(ns) => guards.push(ns),
            Err(e) => panic!("namespace: {e}"),
        }
    }
    let (rel, a, b) = (&guards[0].name, &guards[1].name, &guards[2].name);
    // A dry run persists nothing: the cluster-wide names (the ClusterRole)
    // touch nothing that exists.
    for (name, args) in value_sets_in(a, b) {
        let (stream, docs) = render_for_validation(rel, &args);
        // Offline: kubeconform -strict, every kind must have a schema.
        match tools().kubeconform(&schemas, &stream) {
            Ok(summary) => assert!(
                summary.contains(&format!(
                    "Valid: {}, Invalid: 0, Errors: 0, Skipped: 0",
                    docs.len()
                )),
                "kubeconform ({name}) did not validate all {} documents: {summary}",
                docs.len()
            ),
            Err(out) => panic!("kubeconform ({name}):\n{out}\n{stream}"),
        }
        // The API server: the same manifests, strict field validation.
        let out = cluster.kubectl_stdin(
            ["apply", "--dry-run=server", "--validate=strict", "-f", "-"],
            &stream,
        );
        assert!(
            out.status.success(),
            "kubectl apply --dry-run=server ({name}): {}\n{stream}",
            String::from_utf8_lossy(&out.stderr)
        );
        let expect_monitor = args
            .iter()
            .any(|a| a == "metrics.serviceMonitor.enabled=true");
        let monitors = docs
            .iter()
            .filter(|d| d["kind"] == "ServiceMonitor")
            .count();
        assert_eq!(monitors, usize::from(expect_monitor), "{name}");
    }
    let _ = std::fs::remove_dir_all(&schemas);
}

#[tokio::test]
async fn kubeconform_with_generated_schemas_refuses_an_unknown_field() {
    let Some(cluster) = Cluster::connect().await else {
        return;
    };
    let schemas =
        std::env::temp_dir().join(format!("hermes-kube-schemas-neg-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&schemas);
    if let Err(e) = chart::kube_schemas(&cluster, &schemas) {
        panic!("{e}");
    }
    let docs = render(&[]);
    let mut deployment = chart::by_kind(&docs)["Deployment"][0].clone();
    deployment["spec"]["template"]["spec"]["containers"][0]["securityContext"]["readOnlyRootFilesystm"] =
        json!(true);
    let text = serde_yaml::to_string(&deployment).unwrap_or_default();
    match tools().kubeconform(&schemas, &text) {
        Ok(out) => panic!("kubeconform accepted an unknown field: {out}"),
        Err(out) => assert!(out.contains("readOnlyRootFilesystm"), "{out}"),
    }
    let _ = std::fs::remove_dir_all(&schemas);
}

// ---------------------------------------------------------------------------
// Tier B: the release's life.

/// The operator's pods that are not terminating, and how many are Ready.
async fn operator_pods(cluster: &Cluster) -> (Vec<Pod>, usize) {
    let pods: Api<Pod> = Api::namespaced(cluster.client.clone(), RELEASE_NAMESPACE);
    let list = pods
        .list(&ListParams::default().labels(&format!("app.kubernetes.io/name={OPERATOR}")))
        .await
        .map(|l| l.items)
        .unwrap_or_default();
    let live: Vec<Pod> = list
        .into_iter()
        .filter(|p| p.metadata.deletion_timestamp.is_none())
        .collect();
    let ready = live
        .iter()
        .filter(|p| {
            p.status
                .as_ref()
                .and_then(|s| s.conditions.as_ref())
                .is_some_and(|c| c.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
        })
        .count();
    (live, ready)
}

/// Waits until exactly `n` operator pods exist and all are Ready; their names.
async fn wait_operator_pods(cluster: &Cluster, n: usize) -> Vec<Pod> {
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let (live, ready) = operator_pods(cluster).await;
        if live.len() == n && ready == n {
            return live;
        }
        if Instant::now() > deadline {
            let names: Vec<String> = live
                .iter()
                .filter_map(|p| p.metadata.name.clone())
                .collect();
            panic!("expected {n} Ready operator pods, have {names:?} ({ready} Ready)");
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// Waits until the `hermes-operator` Lease is held by one of `pods`; the holder.
async fn wait_leader(cluster: &Cluster, pods: &[Pod]) -> String {
    let leases: Api<Lease> = Api::namespaced(cluster.client.clone(), RELEASE_NAMESPACE);
    let names: Vec<String> = pods
        .iter()
        .filter_map(|p| p.metadata.name.clone())
        .collect();
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let holder = leases
            .get_opt("hermes-operator")
            .await
            .ok()
            .flatten()
            .and_then(|l| l.spec)
            .and_then(|s| s.holder_identity);
        if let Some(h) = holder.filter(|h| names.contains(h)) {
            return h;
        }
        if Instant::now() > deadline {
            panic!("the Lease is not held by any of {names:?}");
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// `hermes_leader` as the pod's own `/metrics` says (the node reaches pod
/// addresses directly).
fn leader_gauge(pod: &Pod) -> Option<String> {
    let ip = pod.status.as_ref()?.pod_ip.clone()?;
    let mut conn = std::net::TcpStream::connect_timeout(
        &format!("{ip}:8080").parse().ok()?,
        Duration::from_secs(3),
    )
    .ok()?;
    conn.set_read_timeout(Some(Duration::from_secs(3))).ok()?;
    conn.write_all(b"GET /metrics HTTP/1.1\r\nhost: operator\r\nconnection: close\r\n\r\n")
        .ok()?;
    let mut body = String::new();
    let _ = conn.read_to_string(&mut body);
    body.lines()
        .find_map(|l| l.strip_prefix("hermes_leader "))
        .map(|v| v.trim().to_owned())
}

/// A task that names a profile nobody made: the operator's answer (a status
/// with `Admitted=False`) shows it reconciles the task's namespace.
fn task(name: &str) -> Value {
    json!({
        "apiVersion": "hermes.dev/v1alpha1",
        "kind": "HermesTask",
        "metadata": {"name": name},
        "spec": {
            "repo": {"url": "https://git.example.com/tools/greeter.git", "baseRef": "main"},
            "task": "# Punctuate the greeting\n",
            "scope": ["src/**"],
            "profile": "no-such-profile",
        },
    })
}

async fn apply_task(cluster: &Cluster, ns: &str, name: &str) {
    let api: Api<HermesTask> = Api::namespaced(cluster.client.clone(), ns);
    if let Err(e) = api
        .patch(
            name,
            &PatchParams::apply(TEST_FIELD_MANAGER),
            &Patch::Apply(task(name)),
        )
        .await
    {
        panic!("applying task {ns}/{name}: {e}");
    }
}

/// Whether the operator has written the task's status.
async fn has_status(cluster: &Cluster, ns: &str, name: &str) -> bool {
    let api: Api<HermesTask> = Api::namespaced(cluster.client.clone(), ns);
    api.get_opt(name)
        .await
        .ok()
        .flatten()
        .and_then(|t| t.status)
        .is_some_and(|s| !s.conditions.is_empty())
}

async fn wait_status(cluster: &Cluster, ns: &str, name: &str) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while !has_status(cluster, ns, name).await {
        if Instant::now() > deadline {
            panic!("the operator wrote no status on {ns}/{name} in 60s");
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

fn kubectl_ok(cluster: &Cluster, args: &[&str]) -> String {
    let out = cluster.kubectl(args);
    assert!(
        out.status.success(),
        "kubectl {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

/// `kubectl auth can-i` as the operator's ServiceAccount.
fn operator_can(cluster: &Cluster, args: &[&str]) -> bool {
    let mut all = vec![
        "auth",
        "can-i",
        "--as",
        "system:serviceaccount:hermes-system:hermes-operator",
    ];
    all.extend_from_slice(args);
    let out = cluster.kubectl(&all);
    String::from_utf8_lossy(&out.stdout).trim() == "yes"
}

#[tokio::test]
async fn install_upgrade_to_two_replicas_and_to_listed_namespaces_uninstall_and_reinstall_on_tier_b()
 {
    let Some(cluster) = Cluster::connect_tier(Tier::B).await else {
        return;
    };
    let images = match Images::resolve() {
        Ok(i) => i,
        Err(e) => panic!("images: {e}"),
    };
    let install = |args: &[&str]| {
        if let Err(e) = chart::install_operator(&cluster, &images.operator, args) {
            panic!("install-operator {args:?}: {e}");
        }
    };
    let mut guards = Vec::new();
    for prefix in ["chart-a", "chart-b", "chart-c"] {
        match cluster
            .namespace_labelled(
                prefix,
                &[("pod-security.kubernetes.io/enforce", "restricted")],
            )
            .await
        {
            Ok(ns) => guards.push(ns),
            Err(e) => panic!("namespace: {e}"),
        }
    }
    let (a, b, c) = (
        guards[0].name.clone(),
        guards[1].name.clone(),
        guards[2].name.clone(),
    );

    // 1. Install (or upgrade what an earlier run left): one pod, leading.
    install(&[]);
    let pods = wait_operator_pods(&cluster, 1).await;
    let leader = wait_leader(&cluster, &pods).await;
    apply_task(&cluster, &a, "before-uninstall").await;
    wait_status(&cluster, &a, "before-uninstall").await;
    assert!(operator_can(
        &cluster,
        &["list", "hermestasks.hermes.dev", "--all-namespaces"]
    ));
    assert!(!operator_can(&cluster, &["get", "secrets", "-n", &a]));
    assert!(!operator_can(&cluster, &["create", "pods", "-n", &a]));

    // 2. Two replicas: both Ready, exactly one leads (the Lease, and each
    //    pod's own hermes_leader gauge).
    install(&["--set", "replicaCount=2"]);
    let pods = wait_operator_pods(&cluster, 2).await;
    let holder = wait_leader(&cluster, &pods).await;
    assert_eq!(holder, leader, "scaling up must not move the leadership");
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let gauges: Vec<Option<String>> = pods.iter().map(leader_gauge).collect();
        let leaders = gauges.iter().filter(|g| g.as_deref() == Some("1")).count();
        let standbys = gauges.iter().filter(|g| g.as_deref() == Some("0")).count();
        if leaders == 1 && standbys == 1 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "hermes_leader per pod: {gauges:?}"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }

    // 3. Limited to namespaces a and c: a Role in each, no ClusterRole; tasks
    //    in a and c are reconciled (one controller each), tasks in b are not.
    let watch = format!("watchNamespaces={{{a},{c}}}");
    install(&["--set", &watch]);
    let pods = wait_operator_pods(&cluster, 1).await;
    wait_leader(&cluster, &pods).await;
    let cr = cluster.kubectl(["get", "clusterrole", OPERATOR]);
    assert!(!cr.status.success(), "the ClusterRole is still there");
    for ns in [&a, &c] {
        assert!(operator_can(
            &cluster,
            &["list", "hermestasks.hermes.dev", "-n", ns]
        ));
        assert!(operator_can(&cluster, &["create", "jobs.batch", "-n", ns]));
        assert!(!operator_can(&cluster, &["get", "secrets", "-n", ns]));
    }
    assert!(!operator_can(
        &cluster,
        &["list", "hermestasks.hermes.dev", "-n", &b]
    ));
    assert!(!operator_can(&cluster, &["create", "jobs.batch", "-n", &b]));
    assert!(!operator_can(
        &cluster,
        &["list", "hermestasks.hermes.dev", "--all-namespaces"]
    ));
    apply_task(&cluster, &b, "outside").await;
    apply_task(&cluster, &a, "inside").await;
    apply_task(&cluster, &c, "inside-too").await;
    wait_status(&cluster, &a, "inside").await;
    wait_status(&cluster, &c, "inside-too").await;
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert!(
        !has_status(&cluster, &b, "outside").await,
        "the operator acted in {b}, which it does not watch"
    );

    // 4. Uninstall: the operator and its RBAC go; the CRDs and the tasks stay.
    let out = tools().helm([
        "--kubeconfig",
        &cluster.kubeconfig_path().to_string_lossy(),
        "uninstall",
        RELEASE,
        "--namespace",
        RELEASE_NAMESPACE,
        "--wait",
        "--timeout",
        "120s",
    ]);
    assert!(
        out.status.success(),
        "helm uninstall: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let deadline = Instant::now() + Duration::from_secs(60);
    while !operator_pods(&cluster).await.0.is_empty() {
        assert!(
            Instant::now() < deadline,
            "operator pods outlived the uninstall"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    for (kind, ns) in [
        ("deployment", Some(RELEASE_NAMESPACE)),
        ("serviceaccount", Some(RELEASE_NAMESPACE)),
        ("role", Some(a.as_str())),
        ("role", Some(c.as_str())),
    ] {
        let mut args = vec!["get", kind, OPERATOR];
        if let Some(ns) = ns {
            args.extend(["-n", ns]);
        }
        assert!(
            !cluster.kubectl(&args).status.success(),
            "{kind} {OPERATOR} outlived the uninstall"
        );
    }
    kubectl_ok(
        &cluster,
        &[
            "get",
            "crd",
            "hermestasks.hermes.dev",
            "hermesprofiles.hermes.dev",
        ],
    );
    for (ns, name) in [(&a, "before-uninstall"), (&a, "inside"), (&b, "outside")] {
        kubectl_ok(&cluster, &["get", "hermestask", name, "-n", ns]);
    }

    // 5. Reinstall with the defaults, as the tier_b suite expects it: the
    //    task it never saw in b is reconciled now.
    install(&[]);
    let pods = wait_operator_pods(&cluster, 1).await;
    wait_leader(&cluster, &pods).await;
    wait_status(&cluster, &b, "outside").await;
    kubectl_ok(&cluster, &["get", "clusterrole", OPERATOR]);
    let status = kubectl_ok(
        &cluster,
        &[
            "-n",
            RELEASE_NAMESPACE,
            "get",
            "deployment",
            OPERATOR,
            "-o",
            "jsonpath={.spec.replicas} {.spec.template.spec.containers[0].image}",
        ],
    );
    assert_eq!(status, format!("1 {}", images.operator));
}

/// With the gateway on: its pod is restricted and mounts the signing key and
/// each model credential as a directory (so a rotated Secret reaches it);
/// its RBAC reads tasks and profiles and nothing else; the operator gains
/// only the right to create Secrets (never read or change one) and to read
/// the gateway's Service and EndpointSlices in its own namespace.
#[test]
fn the_gateway_is_restricted_reads_only_tasks_and_profiles_and_the_operator_only_creates_secrets() {
    for watch in [false, true] {
        let mut args: Vec<String> = [
            "gateway.enabled=true",
            "gateway.modelCredentials[0].name=anthropic",
            "gateway.modelCredentials[0].secretName=model-key",
        ]
        .iter()
        .flat_map(|p| ["--set".to_owned(), (*p).to_owned()])
        .collect();
        if watch {
            args.extend(["--set".to_owned(), "watchNamespaces={team-a}".to_owned()]);
        }
        let docs = render(&args);
        let by = chart::by_kind(&docs);
        let gateway = by["Deployment"]
            .iter()
            .find(|d| d["metadata"]["name"] == "hermes-gateway")
            .expect("a gateway Deployment");
        let pod = &gateway["spec"]["template"]["spec"];
        assert_eq!(pod["automountServiceAccountToken"], json!(false));
        assert_eq!(pod["serviceAccountName"], json!("hermes-gateway"));
        assert_eq!(pod["securityContext"]["runAsNonRoot"], json!(true));
        assert_eq!(pod["securityContext"]["fsGroup"], json!(65532));
        let c = &pod["containers"][0];
        assert_eq!(
            c["securityContext"],
            json!({"allowPrivilegeEscalation": false, "readOnlyRootFilesystem": true,
                   "capabilities": {"drop": ["ALL"]}})
        );
        assert_eq!(c["readinessProbe"]["httpGet"]["path"], json!("/readyz"));
        let mounts = c["volumeMounts"].to_string();
        assert!(
            mounts.contains("/var/run/hermes/model-credentials/anthropic"),
            "{mounts}"
        );
        assert!(!mounts.contains("subPath"), "{mounts}");
        let service = by["Service"]
            .iter()
            .find(|d| d["metadata"]["name"] == "hermes-gateway")
            .expect("a gateway Service");
        assert_eq!(service["spec"]["sessionAffinity"], json!("ClientIP"));
        for (role, rule) in chart::rbac_rules(&docs) {
            let resources = rule["resources"].to_string();
            let verbs = rule["verbs"].to_string();
            if role.ends_with("/hermes-gateway") {
                assert_eq!(resources, r#"["hermestasks","hermesprofiles"]"#, "{role}");
                assert_eq!(verbs, r#"["get","list","watch"]"#, "{role}");
            }
            if resources.contains("secrets") {
                assert!(role.contains("hermes-operator"), "{role} touches Secrets");
                assert_eq!(verbs, r#"["create"]"#, "{role}: {rule}");
            }
        }
        let operator = by["Deployment"]
            .iter()
            .find(|d| d["metadata"]["name"] == "hermes-operator")
            .expect("the operator");
        let env = operator["spec"]["template"]["spec"]["containers"][0]["env"].to_string();
        assert!(env.contains("HERMES_GATEWAY_SERVICE"), "{env}");
    }
}
