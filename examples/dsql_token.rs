//! Prints an IAM authentication token for a DSQL endpoint (the password
//! `psql` needs), signed with the AWS credentials of the environment: what
//! `aws dsql generate-db-connect-admin-auth-token` prints. The demo uses it
//! to show `psql -f` against the DSQL stand-in.
//!
//! `cargo run --example dsql_token -- localhost:15432 [region] [user]`

use std::time::Duration;

use identity_migrator::db::TokenSource;
use identity_migrator::db::target::dsql_target;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let endpoint = args.next().ok_or("usage: dsql_token <endpoint> [region] [user]")?;
    let region = args.next().unwrap_or_else(|| "us-east-1".into());
    let user = args.next().unwrap_or_else(|| "admin".into());
    let target = dsql_target(&endpoint, Some(&region), &user, "postgres", Duration::from_secs(900))?;
    println!("{}", TokenSource::new(target).token().await?);
    Ok(())
}
