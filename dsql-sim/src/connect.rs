//! Opening a client connection as DSQL does: TLS only, the IAM token checked
//! as the password, the connection rate limited, then a backend connection as
//! the role the client named, whose greeting is passed on with DSQL's version.

use std::sync::Arc;

use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};

use crate::Shared;
use crate::bump;
use crate::session::{Io, Session, fatal};
use crate::token;
use crate::wire::{self, Message, Reader};

/// Serves one accepted connection to its end.
pub(crate) async fn serve(shared: Arc<Shared>, mut stream: TcpStream) -> Io<()> {
    bump(&shared.stats.connections);
    // DSQL accepts TLS connections only.
    loop {
        let mut reader = Reader::new(&mut stream);
        let (code, _) = reader.startup().await?;
        match code {
            wire::SSL_REQUEST => {
                stream.write_all(b"S").await?;
                break;
            }
            wire::GSSENC_REQUEST => stream.write_all(b"N").await?,
            _ => {
                let refusal = fatal("28000", "unable to accept connection, SSL is required", None);
                return wire::send(&mut stream, &[refusal]).await;
            }
        }
    }
    let tls = shared.tls.acceptor.accept(stream).await?;
    let (r, mut w) = tokio::io::split(tls);
    let mut client = Reader::new(r);
    let (code, body) = client.startup().await?;
    if code == wire::CANCEL_REQUEST {
        return forward_cancel(&shared, &body).await;
    }
    if code != wire::PROTOCOL_3 {
        return wire::send(&mut w, &[fatal("08P01", "unsupported protocol version", None)]).await;
    }
    let params = wire::startup_params(&body);
    let param = |k: &str| params.iter().find(|(key, _)| key == k).map(|(_, v)| v.clone()).unwrap_or_default();
    let (user, database) = (param("user"), param("database"));
    if !shared.admit() {
        bump(&shared.stats.refused_rate);
        return wire::send(&mut w, &[fatal("53400", "Unable to accept connection, rate exceeded.", None)]).await;
    }
    wire::send(&mut w, &[Message::new(b'R', 3i32.to_be_bytes().to_vec())]).await?;
    let password = match client.next().await? {
        Some(m) if m.tag == b'p' => m.cstr(0).0,
        _ => return Ok(()),
    };
    let now = jiff::Timestamp::now().as_second() + shared.config.clock_offset_secs;
    let max_age = shared.config.token_max_age.map(|d| d.as_secs() as i64);
    let expect = token::Expect { host: &shared.config.host, region: &shared.config.region, role: &user, now, max_age };
    if let Err(why) = token::verify(&password, &shared.config.credentials, &expect) {
        bump(&shared.stats.refused_tokens);
        tracing::info!(user, reason = %why, "token refused");
        let refusal = fatal("28000", "unable to accept connection, access denied", Some(&why.to_string()));
        return wire::send(&mut w, &[refusal]).await;
    }
    if let Some(signature) = password.rsplit("X-Amz-Signature=").next() {
        shared.tokens_seen.lock().expect("lock").insert(signature.to_string());
    }
    if database != "postgres" {
        let msg = format!("database \"{database}\" does not exist");
        return wire::send(&mut w, &[fatal("3D000", &msg, None)]).await;
    }
    let (backend_r, backend_w, hello) = match open_backend(&shared, &user, &param("application_name")).await {
        Ok(b) => b,
        Err(e) => return wire::send(&mut w, &[fatal("08006", &format!("backend unavailable: {e}"), None)]).await,
    };
    wire::send(&mut w, &hello).await?;
    Session::new(shared, client, w, backend_r, backend_w).run().await
}

async fn forward_cancel(shared: &Shared, body: &[u8]) -> Io<()> {
    let (host, port) = backend_address(shared);
    let mut backend = TcpStream::connect((host.as_str(), port)).await?;
    let mut packet = 16i32.to_be_bytes().to_vec();
    packet.extend_from_slice(&wire::CANCEL_REQUEST.to_be_bytes());
    packet.extend_from_slice(body);
    wire::write_raw(&mut backend, &packet).await
}

fn backend_address(shared: &Shared) -> (String, u16) {
    let host = match shared.backend.get_hosts().first() {
        Some(tokio_postgres::config::Host::Tcp(h)) => h.clone(),
        _ => "127.0.0.1".into(),
    };
    (host, shared.backend.get_ports().first().copied().unwrap_or(5432))
}

/// Connects to the backend as the role the client named (`admin` is the
/// backend URL's user) and returns the greeting to pass on, with DSQL's version.
async fn open_backend(shared: &Shared, user: &str, app: &str) -> Io<(OwnedReadHalf, OwnedWriteHalf, Vec<Message>)> {
    let (host, port) = backend_address(shared);
    let stream = TcpStream::connect((host.as_str(), port)).await?;
    stream.set_nodelay(true)?;
    let (r, mut w) = stream.into_split();
    let role = if user == "admin" { shared.backend.get_user().unwrap_or("postgres") } else { user };
    let db = shared.backend.get_dbname().unwrap_or("postgres");
    wire::write_raw(&mut w, &wire::startup_packet(&[("user", role), ("database", db), ("application_name", app)]))
        .await?;
    let mut reader = Reader::new(r);
    let mut hello = Vec::new();
    loop {
        let m = reader.next().await?.ok_or_else(|| std::io::Error::other("backend closed"))?;
        match m.tag {
            b'R' if m.body[..4] == [0, 0, 0, 0] => hello.push(m),
            b'R' => {
                return Err(std::io::Error::other("the backend asks for a password; give the stand-in trust access"));
            }
            b'E' => return Err(std::io::Error::other(String::from_utf8_lossy(&m.body).into_owned())),
            b'S' if m.cstr(0).0 == "server_version" => {
                hello.push(wire::parameter_status("server_version", &shared.config.server_version))
            }
            b'Z' => {
                hello.push(m);
                break;
            }
            _ => hello.push(m),
        }
    }
    let (r, rest) = reader.into_parts();
    if !rest.is_empty() {
        return Err(std::io::Error::other("unexpected bytes after the backend's greeting"));
    }
    // A statement outside any transaction block is a transaction of its own:
    // DSQL's age limit applies to it too (its error is rewritten to DSQL's).
    let age = shared.config.limits.transaction_age.as_millis();
    let mut reader = Reader::new(r);
    wire::send(&mut w, &[wire::query(&format!("SET statement_timeout = {age}"))]).await?;
    while let Some(m) = reader.next().await? {
        if m.tag == b'Z' {
            break;
        }
    }
    let (r, _) = reader.into_parts();
    Ok((r, w, hello))
}
