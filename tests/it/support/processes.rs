//! Real `identity-migrator controller` processes against the fake API server
//! served over HTTP: what a Deployment of replicas does, with SIGKILL.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};

use super::fake_api::FakeApi;

pub struct Replicas {
    bin: String,
    /// Holds the kubeconfig (and the logs unless told otherwise) while the replicas run.
    _dir: tempfile::TempDir,
    kubeconfig: PathBuf,
    logs: PathBuf,
    running: Vec<(String, Child)>,
}

impl Replicas {
    /// Serves `api` over HTTP and writes a kubeconfig for it. `bin` is the
    /// binary to run; logs go to `logs` (a temporary directory when None).
    pub async fn serve(api: &FakeApi, bin: &str, logs: Option<PathBuf>) -> Self {
        let addr = api.serve().await;
        let dir = tempfile::tempdir().unwrap();
        let logs = logs.unwrap_or_else(|| dir.path().to_path_buf());
        std::fs::create_dir_all(&logs).unwrap();
        let kubeconfig = dir.path().join("kubeconfig");
        std::fs::write(
            &kubeconfig,
            format!(
                "apiVersion: v1\nkind: Config\nclusters: [{{name: fake, cluster: {{server: \"http://{addr}\"}}}}]\n\
                 users: [{{name: fake, user: {{}}}}]\n\
                 contexts: [{{name: fake, context: {{cluster: fake, user: fake, namespace: identity-migrator}}}}]\n\
                 current-context: fake\n"
            ),
        )
        .unwrap();
        Self { bin: bin.to_string(), _dir: dir, kubeconfig, logs, running: Vec::new() }
    }

    /// Starts replica `name` with the Lease duration given and `env` on top.
    pub fn start(&mut self, name: &str, lease_seconds: u64, env: &[(&str, &str)]) {
        let log = std::fs::File::create(self.log_path(name)).unwrap();
        let mut command = Command::new(&self.bin);
        command
            .arg("controller")
            .env("KUBECONFIG", &self.kubeconfig)
            .env("POD_NAME", name)
            .env("POD_NAMESPACE", "identity-migrator")
            .env("LEASE_DURATION_SECONDS", lease_seconds.to_string())
            .env("HTTP_ADDR", "127.0.0.1:0")
            .env("LOG_FORMAT", "text")
            .env("RUST_LOG", std::env::var("IDMIG_BENCH_LOG_LEVEL").unwrap_or_else(|_| "identity_migrator=info".into()))
            .stdout(Stdio::null())
            .stderr(log);
        for (k, v) in env {
            command.env(k, v);
        }
        let child = command.spawn().expect("start a controller process");
        self.running.push((name.to_string(), child));
    }

    pub fn log_path(&self, name: &str) -> PathBuf {
        self.logs.join(format!("{name}.log"))
    }

    pub fn log(&self, name: &str) -> String {
        std::fs::read_to_string(self.log_path(name)).unwrap_or_default()
    }

    pub fn child(&self, name: &str) -> &Child {
        &self.running.iter().find(|(n, _)| n == name).expect("a started replica").1
    }

    /// SIGKILL: the node died.
    pub fn kill(&mut self, name: &str) {
        if let Some(i) = self.running.iter().position(|(n, _)| n == name) {
            let (_, mut child) = self.running.remove(i);
            child.kill().unwrap();
            let _ = child.wait();
        }
    }

    /// SIGTERM to every replica left, and waits for them.
    pub fn stop_all(&mut self) {
        for (_, child) in &mut self.running {
            let _ = Command::new("kill").arg("-TERM").arg(child.id().to_string()).status();
        }
        for (_, mut child) in self.running.drain(..) {
            let _ = child.wait();
        }
    }
}

impl Drop for Replicas {
    fn drop(&mut self) {
        for (_, child) in &mut self.running {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}
