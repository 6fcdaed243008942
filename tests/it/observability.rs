//! The dashboard and the alerts against the real thing: the chart renders
//! them as shipped, every metric they name is exported, and a real
//! Prometheus scrapes a migration and answers every dashboard expression.
//! Needs `prometheus`, `promtool` and `helm` (`./scripts/test` installs them).

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::{Duration, Instant};

use identity_migrator::api::{
    CutoverStatus, IdentityMigrationStatus, PaceStatus, Phase, Progress, QueuedStatus, Verification,
};
use identity_migrator::http::{HttpState, router};
use identity_migrator::metrics::{Here, Metrics, MigrationLabels, MigrationTotals};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::support::PostTag;
use crate::support::TestDb;
use crate::support::fake_api::FakeApi;
use crate::support::operator::{
    Operator, create_migration, create_schema_migration, create_url_secret, phase, wait_for,
};

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn read(path: &str) -> String {
    std::fs::read_to_string(root().join(path)).unwrap_or_else(|e| panic!("{path}: {e}"))
}

fn dashboard() -> Value {
    serde_json::from_str(&read("dashboards/identity-migrator.json")).expect("the dashboard is JSON")
}

/// Every PromQL expression of the dashboard's panels.
fn dashboard_expressions() -> Vec<String> {
    let mut out = Vec::new();
    for panel in dashboard()["panels"].as_array().unwrap() {
        for target in panel["targets"].as_array().into_iter().flatten() {
            out.push(target["expr"].as_str().unwrap().to_string());
        }
    }
    out
}

fn rules() -> Value {
    serde_norway::from_str(&read("alerts/identity-migrator.rules.yaml")).expect("the rules are YAML")
}

/// Every alert's name and expression.
fn alert_expressions() -> Vec<(String, String)> {
    let rules = rules();
    let mut out = Vec::new();
    for group in rules["groups"].as_array().unwrap() {
        for rule in group["rules"].as_array().unwrap() {
            out.push((rule["alert"].as_str().unwrap().to_string(), rule["expr"].as_str().unwrap().to_string()));
        }
    }
    out
}

/// The `identity_migrator_*` names an expression uses.
fn metric_names(expr: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    let mut rest = expr;
    while let Some(at) = rest.find("identity_migrator_") {
        let tail = &rest[at..];
        let end = tail.find(|c: char| !(c.is_ascii_alphanumeric() || c == '_')).unwrap_or(tail.len());
        names.insert(tail[..end].to_string());
        rest = &tail[end..];
    }
    names
}

fn tool(name: &str) -> PathBuf {
    for candidate in [PathBuf::from(name), PathBuf::from("/usr/bin").join(name)] {
        if Command::new(&candidate).arg("--version").output().is_ok_and(|o| o.status.success()) {
            return candidate;
        }
    }
    panic!("{name} not found: run ./scripts/test, which installs it (apt-get install prometheus)");
}

/// A status with every part the metrics read filled in.
fn full_status() -> IdentityMigrationStatus {
    IdentityMigrationStatus {
        phase: Phase::Copying,
        retries: 3,
        endpoint: Some("db:5432".into()),
        queued: Some(QueuedStatus { position: 1, limit: 4, since: None }),
        progress: Some(Progress {
            rows_copied: 10,
            rows_total: 20,
            batches: 2,
            pace: Some(PaceStatus { rows_per_second: Some(50), reason: "Conflicts".into(), message: String::new() }),
            ..Default::default()
        }),
        verification: Some(Verification { passes: 1, ..Default::default() }),
        cutover: Some(CutoverStatus {
            window_millis: Some(40),
            blocked_by: vec!["pid 7".into()],
            ..Default::default()
        }),
        ..Default::default()
    }
}

#[test]
fn every_metric_the_dashboard_and_the_alerts_name_is_exported() {
    let metrics = Metrics::default();
    let labels = MigrationLabels::new("IdentityMigration", "blog", "post-tag");
    let status = full_status();
    metrics.observe_status(&labels, &MigrationTotals::default(), &status);
    metrics.observe_resource(&labels, &status, Here { engine_running: true, suspended: false });
    metrics.observe_reconcile(Duration::from_millis(5), Some("Finalizer"));
    metrics.status_writes.get_or_create(&labels).inc();
    let schema = MigrationLabels::new("SchemaMigration", "blog", "schema");
    metrics.observe_schema(&schema, &Default::default(), false);
    let exposition = metrics.render();
    let exported: BTreeSet<&str> =
        exposition.lines().filter(|l| !l.starts_with('#')).filter_map(|l| l.split(['{', ' ']).next()).collect();
    let mut used = BTreeSet::new();
    for expr in dashboard_expressions().iter().chain(alert_expressions().iter().map(|(_, e)| e)) {
        used.extend(metric_names(expr));
    }
    assert!(used.len() >= 15, "too few names found: {used:?}");
    let missing: Vec<&String> = used.iter().filter(|n| !exported.contains(n.as_str())).collect();
    assert!(missing.is_empty(), "named but not exported: {missing:?}\nexported: {exported:?}");
}

#[test]
fn the_chart_renders_the_dashboard_and_the_rules_as_shipped() {
    for file in ["dashboards/identity-migrator.json", "alerts/identity-migrator.rules.yaml"] {
        assert_eq!(read(file), read(&format!("charts/identity-migrator/{file}")), "the chart's copy of {file} differs");
    }
    let objects = crate::chart::render(&[
        "--set",
        "grafanaDashboard.enabled=true",
        "--set",
        "prometheusRule.enabled=true",
        "--set",
        "grafanaDashboard.annotations.grafana_folder=Databases",
    ])
    .unwrap();
    let map = objects.iter().find(|o| o["kind"] == "ConfigMap").expect("a dashboard ConfigMap");
    assert_eq!(map["metadata"]["labels"]["grafana_dashboard"], "1");
    assert_eq!(map["metadata"]["annotations"]["grafana_folder"], "Databases");
    let json: Value = serde_json::from_str(map["data"]["identity-migrator.json"].as_str().unwrap()).unwrap();
    assert_eq!(json, dashboard());
    let rule = objects.iter().find(|o| o["kind"] == "PrometheusRule").expect("a PrometheusRule");
    assert_eq!(rule["apiVersion"], "monitoring.coreos.com/v1");
    assert_eq!(rule["spec"], rules());
    // No PrometheusRule schema here: promtool checks the rendered spec instead.
    let file = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(file.path(), serde_norway::to_string(&rule["spec"]).unwrap()).unwrap();
    let out = Command::new(tool("promtool")).arg("check").arg("rules").arg(file.path()).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stdout));
    let off = crate::chart::render(&[]).unwrap();
    assert!(!off.iter().any(|o| o["kind"] == "PrometheusRule" || o["kind"] == "ConfigMap"), "both are off by default");
}

/// A Prometheus on a free port, scraping `target` every second, with the alert rules loaded.
struct Prometheus {
    child: Child,
    port: u16,
    _dir: tempfile::TempDir,
}

impl Prometheus {
    async fn start(target: std::net::SocketAddr) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let config = format!(
            "global: {{scrape_interval: 1s, evaluation_interval: 1s}}\n\
             rule_files: [{:?}]\n\
             scrape_configs:\n  - job_name: identity-migrator\n    static_configs: [{{targets: [\"{target}\"]}}]\n",
            root().join("alerts/identity-migrator.rules.yaml").to_str().unwrap()
        );
        std::fs::write(dir.path().join("prometheus.yml"), config).unwrap();
        let port = free_port();
        let child = Command::new(tool("prometheus"))
            .arg(format!("--config.file={}", dir.path().join("prometheus.yml").display()))
            .arg(format!("--storage.tsdb.path={}", dir.path().join("data").display()))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start prometheus");
        let p = Self { child, port, _dir: dir };
        let deadline = Instant::now() + Duration::from_secs(60);
        while get(p.port, "/-/ready").await.is_none_or(|(code, _)| code != 200) {
            assert!(Instant::now() < deadline, "prometheus did not become ready");
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        p
    }

    /// The answer of an instant query.
    async fn query(&self, expr: &str) -> Value {
        let (code, body) = get(self.port, &format!("/api/v1/query?query={}", encode(expr))).await.expect("an answer");
        let answer: Value = serde_json::from_str(&body).unwrap_or_else(|_| panic!("{code}: {body}"));
        assert_eq!(answer["status"], "success", "{expr}: {answer}");
        answer
    }

    /// Waits until `expr` returns at least one series.
    async fn wait_for_series(&self, expr: &str) {
        let deadline = Instant::now() + Duration::from_secs(60);
        while self.query(expr).await["data"]["result"].as_array().is_none_or(|r| r.is_empty()) {
            if Instant::now() > deadline {
                let phases = self.query("max_over_time(identity_migrator_phase[5m]) == 1").await;
                let counts = self.query("count_over_time(identity_migrator_phase[5m])").await;
                panic!("no series for {expr}; phases seen: {phases}\nsamples: {counts}");
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// Percent-encodes a query parameter.
fn encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// A plain HTTP/1.0 GET on localhost: the status code and the body.
async fn get(port: u16, path: &str) -> Option<(u16, String)> {
    let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", port)).await.ok()?;
    stream.write_all(format!("GET {path} HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n").as_bytes()).await.ok()?;
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw).await.ok()?;
    let text = String::from_utf8_lossy(&raw).into_owned();
    let (head, body) = text.split_once("\r\n\r\n")?;
    let code = head.split_whitespace().nth(1)?.parse().ok()?;
    Some((code, body.to_string()))
}

#[tokio::test(flavor = "multi_thread")]
async fn a_real_prometheus_scrapes_a_migration_and_answers_every_dashboard_expression() {
    let db = TestDb::new("observed").await;
    PostTag::rows(30_000).create(&db).await;
    let api = FakeApi::new();
    create_url_secret(&api, "db", &db.url).await;
    let operator = Operator::start(&api, "pod-a");
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let target = listener.local_addr().unwrap();
    let state = HttpState { metrics: operator.metrics.clone(), ready: Arc::new(AtomicBool::new(true)) };
    let server = tokio::spawn(async move { axum::serve(listener, router(state)).await });
    let prometheus = Prometheus::start(target).await;

    // Slow enough for several scrapes while it copies.
    let spec = json!({"copy": {"parallelism": 1, "batchRows": 500, "maxRowsPerSecond": 3000}});
    create_migration(&api, "post-tag", "post_tag", spec).await;
    // And versioned migrations beside it, for the SchemaMigration panels.
    let source = json!({"migrations": [
        {"version": "1", "description": "tables", "sql": "CREATE TABLE shop_orders (id bigint PRIMARY KEY, n integer NOT NULL);"},
        {"version": "2", "description": "seed", "sql": "INSERT INTO shop_orders SELECT g, 0 FROM generate_series(1, 5000) g;"},
        {"version": "3", "description": "bump", "sql": "UPDATE shop_orders SET n = n + 1;"}
    ]});
    create_schema_migration(&api, "shop", source, json!({})).await;
    wait_for(&api, "post-tag", 120, "Completed", |o| phase(o) == "Completed").await;
    // Scraped while it copied, not only once it was done.
    prometheus
        .wait_for_series(r#"max_over_time(identity_migrator_phase{name="post-tag",phase="Copying"}[5m]) == 1"#)
        .await;
    prometheus.wait_for_series(r#"identity_migrator_phase{name="post-tag",phase="Completed"} == 1"#).await;
    prometheus.wait_for_series(r#"identity_migrator_cutover_window_seconds{name="post-tag"}"#).await;
    prometheus.wait_for_series(r#"identity_migrator_schema_state{name="shop",state="UpToDate"} == 1"#).await;
    prometheus.wait_for_series(r#"identity_migrator_schema_migrations_applied_total{name="shop"} == 3"#).await;

    for expr in dashboard_expressions() {
        let expr = expr.replace("$namespace", ".*");
        let answer = prometheus.query(&expr).await;
        let series = answer["data"]["result"].as_array().unwrap();
        assert!(!series.is_empty(), "no series for the dashboard's {expr}");
        let per_migration = series.iter().any(|s| s["metric"].get("name").is_some());
        if per_migration {
            // Grouped by kind too: an IdentityMigration and a TableMigration may share a name.
            let (name, kind) = match expr.contains("identity_migrator_schema_") {
                true => ("shop", "SchemaMigration"),
                false => ("post-tag", "IdentityMigration"),
            };
            let ours = |s: &Value| s["metric"]["name"] == name && s["metric"]["kind"] == kind;
            assert!(series.iter().any(ours), "{expr}: {series:?}");
        }
    }
    // Every alert's expression parses and evaluates against the real data.
    for (_, expr) in alert_expressions() {
        prometheus.query(&expr).await;
    }
    let (_, body) = get(prometheus.port, "/api/v1/rules").await.unwrap();
    let loaded: Value = serde_json::from_str(&body).unwrap();
    let healthy = loaded["data"]["groups"][0]["rules"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["health"] == "ok" || r["health"] == "unknown")
        .count();
    assert_eq!(healthy, alert_expressions().len(), "every rule loaded by Prometheus: {loaded}");
    operator.shutdown().await;
    server.abort();
}

/// `run --metrics-addr` serves the migration's metrics while it runs,
/// labelled with the manifest's name (what `./scripts/demo` plots).
#[tokio::test(flavor = "multi_thread")]
async fn run_serves_its_metrics_while_it_copies() {
    let db = TestDb::new("run_metrics").await;
    let t = PostTag::rows(20_000);
    t.create(&db).await;
    let m =
        crate::support::Manifest::for_table(&t, "  copy: {parallelism: 1, batchRows: 500, maxRowsPerSecond: 4000}\n");
    let port = free_port();
    let mut child = Command::new(crate::support::binary())
        .args(["run", "-f", m.path.to_str().unwrap(), "--database-url", &db.url])
        .args(["--metrics-addr", &format!("127.0.0.1:{port}")])
        .env("NO_PROGRESS", "1")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    let copied = loop {
        let rows = match get(port, "/metrics").await {
            Some((200, text)) => text
                .lines()
                .find(|l| {
                    l.starts_with("identity_migrator_copied_rows{kind=\"IdentityMigration\",")
                        && l.contains("name=\"test\"")
                })
                .and_then(|l| l.rsplit(' ').next()?.parse::<i64>().ok()),
            _ => None,
        };
        if let Some(rows) = rows.filter(|r| *r > 0) {
            break rows;
        }
        assert!(Instant::now() < deadline, "no copied rows served");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert!(copied <= 20_000);
    assert!(child.wait().unwrap().success());
}
