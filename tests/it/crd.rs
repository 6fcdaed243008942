//! The generated CRD as the API server would apply it: its OpenAPI schema
//! (types, enums, unknown fields) and its CEL rules (with kube-cel), checked
//! against the examples and against objects that must be refused.

use std::path::Path;

use identity_migrator::api::IdentityMigrationSpec;
use identity_migrator::engine::plan::validate::{TargetSource, validate_spec};
use serde_json::{Value, json};

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// The `openAPIV3Schema` of the CRD's only version.
fn schema() -> Value {
    let text = std::fs::read_to_string(root().join("crds/identitymigrations.migrations.dsql.dev.yaml")).unwrap();
    let crd: Value = serde_norway::from_str(&text).unwrap();
    crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"].clone()
}

fn schema_errors(object: &Value) -> Vec<String> {
    // Structural schemas are JSON Schema plus x-kubernetes-* keywords, which are ignored here.
    let validator = jsonschema::draft4::new(&schema()).expect("the CRD schema compiles");
    validator.iter_errors(object).map(|e| format!("{}: {e}", e.instance_path)).collect()
}

fn cel_errors(object: &Value, old: Option<&Value>) -> Vec<String> {
    match kube_cel::validate(&schema(), object, old) {
        Ok(()) => Vec::new(),
        Err(errors) => errors.into_vec().into_iter().map(|e| format!("{}: {}", e.field_path, e.message)).collect(),
    }
}

fn migration(spec: Value) -> Value {
    json!({"apiVersion": "migrations.dsql.dev/v1alpha1", "kind": "IdentityMigration",
           "metadata": {"name": "m", "namespace": "blog"}, "spec": spec})
}

fn good_spec() -> Value {
    json!({"target": {"dsql": {"endpoint": "abc.dsql.us-east-1.on.aws"}}, "table": "post_tag",
           "identity": {"cache": 65536}, "copy": {"parallelism": 4}})
}

fn both_targets() -> Value {
    let mut spec = good_spec();
    spec["target"]["postgres"] = json!({"urlSecretRef": {"name": "db", "key": "url"}});
    spec
}

fn with(mut spec: Value, pointer: &str, value: Value) -> Value {
    *spec.pointer_mut(pointer).unwrap_or_else(|| panic!("{pointer}")) = value;
    spec
}

/// The documents of `kind` in examples/*.yaml, with their files.
fn examples_of(kind: &str) -> Vec<(std::path::PathBuf, Value)> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir(root().join("examples")).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().and_then(|e| e.to_str()) != Some("yaml") {
            continue;
        }
        let text = std::fs::read_to_string(&path).unwrap();
        for doc in serde_norway::Deserializer::from_str(&text) {
            let object: Value = serde::Deserialize::deserialize(doc).unwrap();
            if object["kind"] == kind {
                found.push((path.clone(), object));
            }
        }
    }
    found
}

/// Every IdentityMigration in examples/ passes the schema, the CEL rules and the engine's own validation.
#[test]
fn the_examples_are_valid_resources() {
    let mut seen = 0;
    for (path, object) in examples_of("IdentityMigration") {
        seen += 1;
        assert_eq!(schema_errors(&object), Vec::<String>::new(), "{}", path.display());
        assert_eq!(cel_errors(&object, None), Vec::<String>::new(), "{}", path.display());
        let spec: IdentityMigrationSpec = serde_json::from_value(object["spec"].clone()).unwrap();
        validate_spec(&spec, TargetSource::Spec).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    }
    assert!(seen >= 2, "the examples hold IdentityMigrations");
}

#[test]
fn cel_rules_refuse_bad_specs_with_their_messages() {
    assert_eq!(cel_errors(&migration(good_spec()), None), Vec::<String>::new());
    let cases = [
        (with(good_spec(), "/identity/cache", json!(1000)), "cache must be 1 or at least 65536"),
        (with(good_spec(), "/copy/parallelism", json!(0)), "parallelism must be between 1 and 64"),
        (with(good_spec(), "/copy/parallelism", json!(65)), "parallelism must be between 1 and 64"),
        (with(good_spec(), "/target", json!({})), "exactly one of target.dsql and target.postgres"),
        (both_targets(), "exactly one of target.dsql and target.postgres"),
        (with(good_spec(), "/table", json!("")), "table must not be empty"),
    ];
    for (spec, message) in cases {
        let errors = cel_errors(&migration(spec.clone()), None);
        assert!(errors.iter().any(|e| e.contains(message)), "{spec}: expected {message:?}, got {errors:?}");
    }
    // Good edge values pass.
    for (pointer, value) in [("/identity/cache", json!(1)), ("/copy/parallelism", json!(64))] {
        assert_eq!(cel_errors(&migration(with(good_spec(), pointer, value)), None), Vec::<String>::new());
    }
}

#[test]
fn target_schema_table_and_id_column_are_immutable() {
    let old = migration(with(with(good_spec(), "/table", json!("post_tag")), "/copy/parallelism", json!(4)));
    let faster = migration(with(good_spec(), "/copy/parallelism", json!(8)));
    assert_eq!(cel_errors(&faster, Some(&old)), Vec::<String>::new(), "other fields may change");
    let mut spec = good_spec();
    spec["schema"] = json!("public");
    spec["idColumn"] = json!("id");
    let old = migration(spec.clone());
    for (pointer, value, message) in [
        ("/table", json!("other"), "table is immutable"),
        ("/schema", json!("app"), "schema is immutable"),
        ("/idColumn", json!("uid"), "idColumn is immutable"),
        ("/target/dsql/endpoint", json!("xyz.dsql.us-east-1.on.aws"), "target is immutable"),
    ] {
        let errors = cel_errors(&migration(with(spec.clone(), pointer, value)), Some(&old));
        assert!(errors.iter().any(|e| e.contains(message)), "{pointer}: {errors:?}");
    }
}

#[test]
fn the_schema_refuses_wrong_types_unknown_enums_and_misspelt_fields() {
    assert_eq!(schema_errors(&migration(good_spec())), Vec::<String>::new());
    for (spec, at) in [
        (with(good_spec(), "/copy/parallelism", json!("four")), "/spec/copy/parallelism"),
        (with(good_spec(), "/identity/cache", json!(1.5)), "/spec/identity/cache"),
        (with(good_spec(), "/table", json!(7)), "/spec/table"),
    ] {
        let errors = schema_errors(&migration(spec));
        assert!(errors.iter().any(|e| e.starts_with(at)), "{at}: {errors:?}");
    }
    let mut spec = good_spec();
    spec["identity"]["generation"] = json!("Sometimes");
    assert!(schema_errors(&migration(spec)).iter().any(|e| e.starts_with("/spec/identity/generation")));
    let mut spec = good_spec();
    spec["cutover"] = json!({"approval": "Later"});
    assert!(schema_errors(&migration(spec)).iter().any(|e| e.starts_with("/spec/cutover/approval")));
    let mut spec = good_spec();
    spec.as_object_mut().unwrap().remove("table");
    assert!(!schema_errors(&migration(spec)).is_empty(), "table is required");
}

/// Evaluates the printer-column JSONPath forms the CRD uses: `.a.b` and
/// `.a[?(@.k=="v")].b`, as kubectl does for `get -o wide`.
fn column(object: &Value, path: &str) -> Value {
    let mut current = object.clone();
    let mut rest = path.trim_start_matches('.');
    while !rest.is_empty() {
        let end = rest.find(['.', '[']).unwrap_or(rest.len());
        let (key, tail) = rest.split_at(end);
        current = current[key].clone();
        rest = tail;
        if let Some(filter) = rest.strip_prefix("[?(@.") {
            let close = filter.find(")]").unwrap();
            let (k, v) = filter[..close].split_once("==").unwrap();
            let wanted = v.trim_matches('"');
            current =
                current.as_array().and_then(|a| a.iter().find(|e| e[k] == wanted).cloned()).unwrap_or(Value::Null);
            rest = &filter[close + 2..];
        }
        rest = rest.trim_start_matches('.');
    }
    current
}

#[test]
fn the_wide_columns_show_the_line_the_pace_and_the_window() {
    use identity_migrator::api::conditions::refresh_conditions;
    use identity_migrator::api::{
        CutoverStatus, IdentityMigrationStatus, PaceStatus, Phase, Progress, QueuedStatus, now,
    };
    use kube::CustomResourceExt;
    let crd = serde_json::to_value(identity_migrator::api::IdentityMigration::crd()).unwrap();
    let columns = crd["spec"]["versions"][0]["additionalPrinterColumns"].as_array().unwrap().clone();
    let path_of = |name: &str| {
        let c = columns.iter().find(|c| c["name"] == name).unwrap_or_else(|| panic!("no column {name}"));
        assert_eq!(c["priority"], 1, "{name} shows with -o wide");
        c["jsonPath"].as_str().unwrap().to_string()
    };
    let shown = |status: IdentityMigrationStatus| {
        let mut status = status;
        refresh_conditions(&mut status, false, &now());
        json!({"status": serde_json::to_value(status).unwrap()})
    };
    let queued = shown(IdentityMigrationStatus {
        endpoint: Some("db.example.com:5432".into()),
        queued: Some(QueuedStatus { position: 3, limit: 4, since: None }),
        ..Default::default()
    });
    assert_eq!(column(&queued, &path_of("Reason")), "Queued");
    let paced = shown(IdentityMigrationStatus {
        phase: Phase::Copying,
        progress: Some(Progress {
            pace: Some(PaceStatus {
                rows_per_second: Some(250),
                reason: "CommitLatency".into(),
                message: "commit latency p95 240 ms > 100 ms".into(),
            }),
            ..Default::default()
        }),
        ..Default::default()
    });
    assert_eq!(column(&paced, &path_of("Pace")), "CommitLatency");
    assert_eq!(column(&paced, &path_of("Reason")), "Copying");
    let opens = "2026-12-02T01:00:00Z";
    let window = shown(IdentityMigrationStatus {
        phase: Phase::AwaitingCutover,
        cutover: Some(CutoverStatus {
            next_window: Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(opens.parse().unwrap())),
            ..Default::default()
        }),
        ..Default::default()
    });
    assert_eq!(column(&window, &path_of("Reason")), "AwaitingWindow");
    assert_eq!(column(&window, &path_of("Next Window")), opens);
    // `describe` prints the conditions' messages: each says why in words.
    let message = |o: &Value, t: &str| column(o, &format!(".status.conditions[?(@.type==\"{t}\")].message"));
    assert!(message(&queued, "Ready").as_str().unwrap().contains("number 3 in line for db.example.com:5432"));
    assert!(message(&paced, "Progressing").as_str().unwrap().contains("slowed: commit latency p95 240 ms > 100 ms"));
    assert!(message(&window, "Ready").as_str().unwrap().contains(opens));
}

/// The `openAPIV3Schema` of the TableMigration CRD.
fn table_schema() -> Value {
    let text = std::fs::read_to_string(root().join("crds/tablemigrations.migrations.dsql.dev.yaml")).unwrap();
    let crd: Value = serde_norway::from_str(&text).unwrap();
    crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"].clone()
}

fn table_errors(object: &Value, old: Option<&Value>) -> Vec<String> {
    let schema = table_schema();
    let validator = jsonschema::draft4::new(&schema).expect("the CRD schema compiles");
    let mut errors: Vec<String> = validator.iter_errors(object).map(|e| format!("{}: {e}", e.instance_path)).collect();
    if let Err(cel) = kube_cel::validate(&schema, object, old) {
        errors.extend(cel.into_vec().into_iter().map(|e| format!("{}: {}", e.field_path, e.message)));
    }
    errors
}

/// The TableMigrations in examples/ pass the CRD; a change with two keys, an
/// empty list and an edited list are refused with their messages.
#[test]
fn table_migrations_are_checked_by_their_own_crd() {
    let mut seen = Vec::new();
    for (path, object) in examples_of("TableMigration") {
        assert_eq!(table_errors(&object, None), Vec::<String>::new(), "{}", path.display());
        seen.push(object);
    }
    let good = seen.first().expect("examples/ holds a TableMigration").clone();
    let mut two_keys = good.clone();
    two_keys["spec"]["changes"][0]["renameColumn"] = json!({"from": "a", "to": "b"});
    let errors = table_errors(&two_keys, None);
    assert!(errors.iter().any(|e| e.contains("each change sets exactly one of")), "{errors:?}");
    let mut none = good.clone();
    none["spec"]["changes"] = json!([]);
    let errors = table_errors(&none, None);
    assert!(errors.iter().any(|e| e.contains("changes must list at least one change")), "{errors:?}");
    let mut edited = good.clone();
    edited["spec"]["changes"][0] = json!({"dropColumn": {"name": "email"}});
    let errors = table_errors(&edited, Some(&good));
    assert!(errors.iter().any(|e| e.contains("changes are immutable")), "{errors:?}");
    let mut misspelt = good;
    misspelt["spec"]["changes"][0] = json!({"dropColum": {"name": "legacy"}});
    assert!(!table_errors(&misspelt, None).is_empty(), "an unknown key is refused by the schema");
}
