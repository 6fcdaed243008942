//! The Helm chart as rendered: least-privilege RBAC without wildcards, a pod
//! that cannot run as root, a ServiceAccount that exists and is used, and the
//! CRD shipped in the chart equal to the generated one. Needs `helm`
//! (`./scripts/test` installs it).

use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn helm() -> PathBuf {
    if let Ok(path) = std::env::var("HELM") {
        return PathBuf::from(path);
    }
    let cached =
        PathBuf::from(std::env::var("HOME").unwrap_or_default()).join(".cache/identity-migrator/k8s-tools/bin/helm");
    for candidate in [PathBuf::from("helm"), cached] {
        if Command::new(&candidate).arg("version").output().is_ok_and(|o| o.status.success()) {
            return candidate;
        }
    }
    panic!("helm not found: run ./scripts/test, which installs it, or set HELM");
}

/// `helm template` with extra arguments (`--set ...`, `--values ...`), as a list of objects.
pub(crate) fn render(args: &[&str]) -> Result<Vec<Value>, String> {
    let mut cmd = Command::new(helm());
    cmd.args(["template", "rel", "--namespace", "identity-migrator"]).arg(root().join("charts/identity-migrator"));
    cmd.args(args);
    let out = cmd.output().unwrap();
    if !out.status.success() {
        return Err(String::from_utf8_lossy(&out.stderr).into_owned());
    }
    let text = String::from_utf8(out.stdout).unwrap();
    Ok(serde_norway::Deserializer::from_str(&text)
        .map(|doc| serde::Deserialize::deserialize(doc).unwrap())
        .filter(|v: &Value| !v.is_null())
        .collect())
}

fn of_kind<'a>(objects: &'a [Value], kind: &str) -> Vec<&'a Value> {
    objects.iter().filter(|o| o["kind"] == kind).collect()
}

/// The chart's CI values: every optional feature on.
const ALL_FEATURES: &str = "charts/identity-migrator/ci/all-features-values.yaml";

/// What the chart must never render; returns every violation found.
fn violations(objects: &[Value]) -> Vec<String> {
    let mut found = Vec::new();
    for role in objects.iter().filter(|o| o["kind"] == "Role" || o["kind"] == "ClusterRole") {
        for rule in role["rules"].as_array().into_iter().flatten() {
            for field in ["apiGroups", "resources", "verbs", "resourceNames"] {
                if rule[field].as_array().is_some_and(|v| v.iter().any(|x| x.as_str().is_some_and(|s| s.contains('*'))))
                {
                    found.push(format!("{} {}: wildcard in {field}", role["kind"], role["metadata"]["name"]));
                }
            }
            if rule["resources"].as_array().is_some_and(|r| r.iter().any(|x| x == "secrets"))
                && rule["verbs"] != serde_json::json!(["get"])
            {
                found.push(format!("{}: secrets verbs {}", role["metadata"]["name"], rule["verbs"]));
            }
        }
    }
    let accounts: Vec<&str> =
        of_kind(objects, "ServiceAccount").iter().filter_map(|sa| sa["metadata"]["name"].as_str()).collect();
    if accounts.is_empty() {
        found.push("no ServiceAccount".into());
    }
    for deployment in of_kind(objects, "Deployment") {
        let pod = &deployment["spec"]["template"]["spec"];
        let account = pod["serviceAccountName"].as_str().unwrap_or_default();
        if !accounts.contains(&account) {
            found.push(format!("the pod uses ServiceAccount {account:?}, which the chart does not create"));
        }
        let pod_sc = &pod["securityContext"];
        for container in pod["containers"].as_array().into_iter().flatten() {
            let sc = &container["securityContext"];
            let non_root =
                sc["runAsNonRoot"] == true || (sc["runAsNonRoot"].is_null() && pod_sc["runAsNonRoot"] == true);
            let uid = sc["runAsUser"].as_i64().or(pod_sc["runAsUser"].as_i64());
            if !non_root || uid == Some(0) {
                found.push(format!("container {} may run as root", container["name"]));
            }
            if sc["readOnlyRootFilesystem"] != true {
                found.push("the root filesystem is writable".into());
            }
            if sc["allowPrivilegeEscalation"] != false {
                found.push("privilege escalation is allowed".into());
            }
            if sc["capabilities"]["drop"] != serde_json::json!(["ALL"]) {
                found.push("capabilities are not all dropped".into());
            }
            let seccomp = sc["seccompProfile"]["type"].as_str().or(pod_sc["seccompProfile"]["type"].as_str());
            if seccomp != Some("RuntimeDefault") {
                found.push("seccomp is not RuntimeDefault".into());
            }
            for (probe, path) in [("livenessProbe", "/healthz"), ("readinessProbe", "/readyz")] {
                if container[probe]["httpGet"]["path"] != path {
                    found.push(format!("{probe} is not on {path}"));
                }
            }
        }
    }
    found
}

#[test]
fn default_values_render_a_safe_cluster_wide_operator() {
    let objects = render(&[]).unwrap();
    assert_eq!(violations(&objects), Vec::<String>::new());
    assert_eq!(of_kind(&objects, "ClusterRole").len(), 1);
    assert_eq!(of_kind(&objects, "Role").len(), 1, "only the Role for the migrations' Leases");
    let deployment = of_kind(&objects, "Deployment")[0];
    assert_eq!(deployment["spec"]["replicas"], 2);
    assert!(!deployment["spec"]["template"]["spec"]["containers"][0]["resources"]["limits"].is_null());
    assert_eq!(of_kind(&objects, "PodDisruptionBudget").len(), 1);
    assert!(of_kind(&objects, "ServiceMonitor").is_empty());
}

#[test]
fn every_optional_feature_renders_namespaced_roles_and_stays_safe() {
    let values = root().join(ALL_FEATURES);
    let objects = render(&["--values", values.to_str().unwrap()]).unwrap();
    assert_eq!(violations(&objects), Vec::<String>::new());
    assert!(of_kind(&objects, "ClusterRole").is_empty(), "watchNamespaces switches to Roles");
    let namespaces: Vec<&str> =
        of_kind(&objects, "Role").iter().filter_map(|r| r["metadata"]["namespace"].as_str()).collect();
    assert!(namespaces.contains(&"blog") && namespaces.contains(&"shop"), "{namespaces:?}");
    assert_eq!(of_kind(&objects, "ServiceMonitor").len(), 1);
    let sa = of_kind(&objects, "ServiceAccount")[0];
    assert!(sa["metadata"]["annotations"]["eks.amazonaws.com/role-arn"].is_string(), "IRSA annotation");
}

#[test]
fn the_checks_catch_a_root_pod_and_bad_values_fail_to_install() {
    let root =
        render(&["--set", "podSecurityContext.runAsUser=0", "--set", "securityContext.runAsNonRoot=false"]).unwrap();
    assert!(violations(&root).iter().any(|v| v.contains("may run as root")), "the check must be able to fail");
    let no_sa = render(&["--set", "serviceAccount.create=false", "--set", "serviceAccount.name=someone"]).unwrap();
    assert!(violations(&no_sa).iter().any(|v| v.contains("does not create")));
    for bad in ["replicaCount=0", "logFormat=xml", "watchNamespaces={Not_A_Namespace}", "unknownValue=1"] {
        let err = render(&["--set", bad]).expect_err(bad);
        assert!(err.contains("values don't meet the specifications") || err.contains("schema"), "{bad}: {err}");
    }
}

#[test]
fn the_chart_ships_the_generated_crds() {
    for file in [
        "identitymigrations.migrations.dsql.dev.yaml",
        "tablemigrations.migrations.dsql.dev.yaml",
        "schemamigrations.migrations.dsql.dev.yaml",
    ] {
        let chart = std::fs::read_to_string(root().join("charts/identity-migrator/crds").join(file));
        let generated = std::fs::read_to_string(root().join("crds").join(file)).unwrap();
        assert!(chart.is_ok_and(|c| c == generated), "copy crds/{file} into charts/identity-migrator/crds/");
    }
}

/// Every kind the operator reconciles, with what its reconciler does to it:
/// watch it, write its status, manage its finalizer.
#[test]
fn the_operator_may_reconcile_the_three_kinds() {
    for objects in [render(&[]).unwrap(), render(&["--values", ALL_FEATURES]).unwrap()] {
        let roles: Vec<&Value> = objects.iter().filter(|o| o["kind"] == "Role" || o["kind"] == "ClusterRole").collect();
        let allows = |resource: &str, verb: &str| {
            roles.iter().flat_map(|r| r["rules"].as_array().into_iter().flatten()).any(|rule| {
                let has = |field: &str, x: &str| rule[field].as_array().is_some_and(|v| v.iter().any(|y| y == x));
                has("apiGroups", "migrations.dsql.dev") && has("resources", resource) && has("verbs", verb)
            })
        };
        for plural in ["identitymigrations", "tablemigrations", "schemamigrations"] {
            for verb in ["get", "list", "watch", "patch"] {
                assert!(allows(plural, verb), "{plural}: {verb} is not granted");
            }
            assert!(allows(&format!("{plural}/status"), "patch"), "{plural}/status: patch is not granted");
        }
        for plural in ["identitymigrations", "tablemigrations"] {
            assert!(allows(&format!("{plural}/finalizers"), "update"), "{plural}/finalizers: update is not granted");
        }
        let core = |resource: &str, verb: &str| {
            roles.iter().flat_map(|r| r["rules"].as_array().into_iter().flatten()).any(|rule| {
                let has = |field: &str, x: &str| rule[field].as_array().is_some_and(|v| v.iter().any(|y| y == x));
                has("apiGroups", "") && has("resources", resource) && has("verbs", verb)
            })
        };
        assert!(core("configmaps", "get") && core("configmaps", "list"), "a SchemaMigration's ConfigMaps");
    }
}
