//! Argo CD's view of the three kinds: the health script of
//! examples/argocd-health.lua, run by a Lua interpreter over the statuses
//! the operator writes, and the ConfigMap that installs it.

use std::path::PathBuf;
use std::process::Command;

use serde_json::{Value, json};

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn lua() -> &'static str {
    let found = Command::new("lua5.4").arg("-v").output().is_ok_and(|o| o.status.success());
    assert!(found, "lua5.4 not found: run ./scripts/test, which installs it (apt-get install lua5.4)");
    "lua5.4"
}

/// A JSON value as a Lua table constructor (what Argo CD hands the script as `obj`).
fn lua_literal(v: &Value) -> String {
    match v {
        Value::Null => "nil".into(),
        Value::Bool(b) => b.to_string(),
        Value::Number(n) => n.to_string(),
        Value::String(s) => format!("{s:?}"),
        Value::Array(items) => format!("{{{}}}", items.iter().map(lua_literal).collect::<Vec<_>>().join(", ")),
        Value::Object(map) => {
            let fields: Vec<String> = map.iter().map(|(k, v)| format!("[{k:?}] = {}", lua_literal(v))).collect();
            format!("{{{}}}", fields.join(", "))
        }
    }
}

/// The health Argo CD would show for `obj`: (status, message).
fn health(obj: &Value) -> (String, String) {
    let dir = tempfile::tempdir().unwrap();
    let script = root().join("examples/argocd-health.lua");
    let harness = dir.path().join("harness.lua");
    let text = format!(
        "obj = {}\nlocal hs = dofile({:?})\nio.write(hs.status .. \"|\" .. (hs.message or \"\"))\n",
        lua_literal(obj),
        script.to_str().unwrap()
    );
    std::fs::write(&harness, text).unwrap();
    let out = Command::new(lua()).arg(&harness).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let printed = String::from_utf8(out.stdout).unwrap();
    let (status, message) = printed.split_once('|').unwrap();
    (status.to_string(), message.to_string())
}

fn with(generation: i64, observed: i64, conditions: Value) -> Value {
    json!({"metadata": {"generation": generation}, "status": {"observedGeneration": observed, "conditions": conditions}})
}

fn condition(type_: &str, status: &str, reason: &str, message: &str) -> Value {
    json!({"type": type_, "status": status, "reason": reason, "message": message})
}

#[test]
fn argo_cd_sees_done_migrations_healthy_failed_ones_degraded_and_waiting_ones_suspended() {
    let ready = condition("Ready", "True", "Completed", "the table uses its identity column");
    assert_eq!(health(&with(2, 2, json!([ready.clone()]))).0, "Healthy");
    let failed = json!([
        condition("Ready", "False", "Failed", "x"),
        condition("Degraded", "True", "InvalidSpec", "spec.table: no such table")
    ]);
    assert_eq!(health(&with(1, 1, failed)), ("Degraded".into(), "spec.table: no such table".into()));
    let drifted = json!([
        condition("Ready", "False", "Drifted", "x"),
        condition("Drifted", "True", "Drifted", "version 3 changed")
    ]);
    assert_eq!(health(&with(1, 1, drifted)), ("Degraded".into(), "version 3 changed".into()));
    let waiting =
        json!([condition("Ready", "False", "AwaitingApproval", "verified; waiting for spec.cutover.approved")]);
    assert_eq!(health(&with(1, 1, waiting)).0, "Suspended");
    let copying = json!([condition("Ready", "False", "Copying", "copied 40%")]);
    assert_eq!(health(&with(1, 1, copying)), ("Progressing".into(), "copied 40%".into()));
    assert_eq!(health(&with(3, 2, json!([ready]))).0, "Progressing", "a spec the operator has not seen yet");
    assert_eq!(health(&json!({"metadata": {"generation": 1}})).0, "Progressing", "no status yet");
}

#[test]
fn the_argo_cd_configmap_installs_the_same_script_for_the_three_kinds() {
    let script = std::fs::read_to_string(root().join("examples/argocd-health.lua")).unwrap();
    let cm: Value =
        serde_norway::from_str(&std::fs::read_to_string(root().join("examples/argocd-health-cm.yaml")).unwrap())
            .unwrap();
    for kind in ["IdentityMigration", "TableMigration", "SchemaMigration"] {
        let key = format!("resource.customizations.health.migrations.dsql.dev_{kind}");
        assert_eq!(cm["data"][&key].as_str(), Some(script.as_str()), "{key} is not examples/argocd-health.lua");
    }
}
