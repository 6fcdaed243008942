//! `dsql-sim`: runs the DSQL stand-in in front of a PostgreSQL database until
//! interrupted. See the README's "Against the DSQL stand-in".

use std::path::PathBuf;
use std::time::Duration;

use clap::Parser;
use dsql_sim::{BuildPace, Config, Credentials, Limits, Sim};

#[derive(Parser)]
#[command(about = "An Aurora DSQL stand-in for tests, in front of a local PostgreSQL")]
struct Args {
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:15432")]
    listen: std::net::SocketAddr,
    /// The backend PostgreSQL database (a superuser with trust access).
    #[arg(long, default_value = "postgres://postgres@127.0.0.1:5432/postgres")]
    backend: String,
    /// Host name tokens must be signed for and the certificate carries.
    #[arg(long, default_value = "localhost")]
    host: String,
    #[arg(long, default_value = "us-east-1")]
    region: String,
    /// Access key accepted for token signatures (with --secret-access-key).
    #[arg(long, env = "AWS_ACCESS_KEY_ID")]
    access_key_id: String,
    #[arg(long, env = "AWS_SECRET_ACCESS_KEY", hide_env_values = true)]
    secret_access_key: String,
    /// Where to write the test CA (PEM) clients must trust.
    #[arg(long)]
    ca_file: PathBuf,
    /// Refuse ALTER TABLE ... ADD GENERATED ... AS IDENTITY, as DSQL did in February 2026.
    #[arg(long)]
    refuse_add_identity: bool,
    /// Also refuse what AWS's pages do not list: COMMENT ON, column grants,
    /// WITH GRANT OPTION, reads of pg_policy, pg_trigger, pg_rewrite, aclexplode.
    #[arg(long)]
    strict_undocumented: bool,
    /// Fraction of write commits failed with OC000.
    #[arg(long, default_value_t = 0.0)]
    conflict_fraction: f64,
    #[arg(long, default_value_t = 3000)]
    rows_per_transaction: i64,
    #[arg(long, default_value_t = 300)]
    transaction_age_secs: u64,
    #[arg(long, default_value_t = 3600)]
    connection_lifetime_secs: u64,
    /// Milliseconds added to every round trip (a client's message group), as
    /// a network to a regional endpoint would.
    #[arg(long, default_value_t = 0)]
    latency_ms: u64,
    /// Up to this many milliseconds more, drawn per round trip.
    #[arg(long, default_value_t = 0)]
    latency_jitter_ms: u64,
    /// How long each background index build takes after its commit.
    #[arg(long, default_value_t = 500)]
    index_build_ms: u64,
}

#[tokio::main]
async fn main() -> Result<(), String> {
    tracing_subscriber::fmt().with_env_filter(tracing_subscriber::EnvFilter::from_default_env()).init();
    let args = Args::parse();
    let credentials = Credentials { access_key_id: args.access_key_id, secret_access_key: args.secret_access_key };
    let mut config = Config::new(args.backend, credentials);
    config.listen = args.listen;
    config.host = args.host;
    config.region = args.region;
    config.refuse_add_identity = args.refuse_add_identity;
    config.strict_undocumented = args.strict_undocumented;
    config.latency = Duration::from_millis(args.latency_ms);
    config.latency_jitter = Duration::from_millis(args.latency_jitter_ms);
    config.conflict_fraction = args.conflict_fraction;
    config.builds = BuildPace::After(Duration::from_millis(args.index_build_ms));
    config.limits = Limits {
        rows_per_transaction: args.rows_per_transaction,
        transaction_age: Duration::from_secs(args.transaction_age_secs),
        connection_lifetime: Duration::from_secs(args.connection_lifetime_secs),
        ..Limits::default()
    };
    let sim = Sim::start(config).await?;
    std::fs::write(&args.ca_file, sim.ca_pem()).map_err(|e| format!("{}: {e}", args.ca_file.display()))?;
    println!("dsql-sim listening on {} (endpoint {}), CA in {}", sim.addr(), sim.endpoint(), args.ca_file.display());
    tokio::signal::ctrl_c().await.map_err(|e| e.to_string())?;
    Ok(())
}
