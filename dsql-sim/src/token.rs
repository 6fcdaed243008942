//! Checks a password as Aurora DSQL checks it: an IAM authentication token,
//! that is a SigV4 query-string presigned `GET https://<host>/?Action=...`
//! for the service `dsql`, signed with the caller's secret key and valid for
//! `X-Amz-Expires` seconds from `X-Amz-Date`.
//!
//! Sources: "Generating an authentication token in Amazon Aurora DSQL"
//! (https://docs.aws.amazon.com/aurora-dsql/latest/userguide/SECTION_authentication-token.html),
//! AWS Signature Version 4 for query strings
//! (https://docs.aws.amazon.com/IAM/latest/UserGuide/create-signed-request.html),
//! and the token layout of aws-sdk-dsql's `AuthTokenGenerator`.

use hmac::{Hmac, KeyInit, Mac};
use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, percent_decode_str, utf8_percent_encode};
use sha2::{Digest, Sha256};

/// SigV4 leaves only these unescaped (RFC 3986 unreserved).
const SIGV4: &AsciiSet = &NON_ALPHANUMERIC.remove(b'-').remove(b'_').remove(b'.').remove(b'~');
/// The payload of a GET with no body, hashed.
const EMPTY_SHA256: &str = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";

/// Credentials the stand-in accepts (the test's static key pair).
#[derive(Clone, Debug)]
pub struct Credentials {
    pub access_key_id: String,
    pub secret_access_key: String,
}

/// Why a token is refused. DSQL answers all of these with one refusal; the
/// reason goes to the stand-in's log and the error's detail.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    #[error("no token")]
    Missing,
    #[error("not a presigned URL: {0}")]
    Malformed(String),
    #[error("token is for host {0:?}")]
    WrongHost(String),
    #[error("action {found} does not allow role {role:?} (expected {expected})")]
    WrongAction { found: String, expected: &'static str, role: String },
    #[error("unknown access key {0:?}")]
    UnknownKey(String),
    #[error("credential scope {0:?} is not <date>/<region>/dsql/aws4_request")]
    WrongScope(String),
    #[error("signature does not match")]
    BadSignature,
    #[error("token expired at {0}")]
    Expired(String),
    #[error("token is dated in the future ({0})")]
    NotYetValid(String),
}

/// What the token must be for.
pub struct Expect<'a> {
    pub host: &'a str,
    pub region: &'a str,
    pub role: &'a str,
    /// Seconds since the Unix epoch, as the stand-in's clock says.
    pub now: i64,
    /// The longest a token may be used for, whatever it says.
    pub max_age: Option<i64>,
}

/// Verifies `token` (the password of the startup) for `expect`.
pub fn verify(token: &str, credentials: &[Credentials], expect: &Expect<'_>) -> Result<(), Refusal> {
    if token.is_empty() {
        return Err(Refusal::Missing);
    }
    let (host, query) = token.split_once("/?").ok_or_else(|| Refusal::Malformed("no /? after the host".into()))?;
    if !host.eq_ignore_ascii_case(expect.host) {
        return Err(Refusal::WrongHost(host.to_string()));
    }
    let mut params: Vec<(String, String)> = Vec::new();
    for pair in query.split('&') {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        let decode = |s: &str| percent_decode_str(s).decode_utf8().map(|c| c.into_owned());
        let (k, v) = (decode(k), decode(v));
        params.push((
            k.map_err(|e| Refusal::Malformed(e.to_string()))?,
            v.map_err(|e| Refusal::Malformed(e.to_string()))?,
        ));
    }
    let get = |key: &str| {
        params
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
            .ok_or_else(|| Refusal::Malformed(format!("{key} missing")))
    };
    let expected = if expect.role == "admin" { "DbConnectAdmin" } else { "DbConnect" };
    let action = get("Action")?;
    if action != expected {
        return Err(Refusal::WrongAction { found: action.to_string(), expected, role: expect.role.to_string() });
    }
    if get("X-Amz-Algorithm")? != "AWS4-HMAC-SHA256" || get("X-Amz-SignedHeaders")? != "host" {
        return Err(Refusal::Malformed("algorithm or signed headers".into()));
    }
    let credential = get("X-Amz-Credential")?;
    let (key_id, scope) = credential.split_once('/').ok_or_else(|| Refusal::Malformed("credential".into()))?;
    let secret = credentials
        .iter()
        .find(|c| c.access_key_id == key_id)
        .map(|c| c.secret_access_key.as_str())
        .ok_or_else(|| Refusal::UnknownKey(key_id.to_string()))?;
    let amz_date = get("X-Amz-Date")?;
    let scope_parts: Vec<&str> = scope.split('/').collect();
    if scope_parts.len() != 4
        || !amz_date.starts_with(scope_parts[0])
        || scope_parts[1] != expect.region
        || scope_parts[2] != "dsql"
        || scope_parts[3] != "aws4_request"
    {
        return Err(Refusal::WrongScope(scope.to_string()));
    }
    let signed_at = parse_amz_date(amz_date).ok_or_else(|| Refusal::Malformed(format!("X-Amz-Date {amz_date:?}")))?;
    let expires: i64 = get("X-Amz-Expires")?.parse().map_err(|_| Refusal::Malformed("X-Amz-Expires".into()))?;
    // SigV4 allows a few minutes of clock skew on the signing time.
    if signed_at > expect.now + 300 {
        return Err(Refusal::NotYetValid(amz_date.to_string()));
    }
    let expires = expect.max_age.map_or(expires, |max| expires.min(max));
    if expect.now > signed_at + expires {
        return Err(Refusal::Expired(format_time(signed_at + expires)));
    }
    let signature = get("X-Amz-Signature")?;
    let wanted = sign(secret, host, &params, amz_date, scope);
    // Constant time is not needed for a test stand-in, but costs nothing here.
    if signature.len() != wanted.len()
        || signature.bytes().zip(wanted.bytes()).fold(0, |acc, (a, b)| acc | (a ^ b)) != 0
    {
        return Err(Refusal::BadSignature);
    }
    Ok(())
}

/// The hex signature SigV4 gives the presigned request.
fn sign(secret: &str, host: &str, params: &[(String, String)], amz_date: &str, scope: &str) -> String {
    let mut canonical: Vec<(String, String)> = params
        .iter()
        .filter(|(k, _)| k != "X-Amz-Signature")
        .map(|(k, v)| (utf8_percent_encode(k, SIGV4).to_string(), utf8_percent_encode(v, SIGV4).to_string()))
        .collect();
    canonical.sort();
    let query: Vec<String> = canonical.iter().map(|(k, v)| format!("{k}={v}")).collect();
    let request = format!("GET\n/\n{}\nhost:{}\n\nhost\n{EMPTY_SHA256}", query.join("&"), host.to_ascii_lowercase());
    let to_sign = format!("AWS4-HMAC-SHA256\n{amz_date}\n{scope}\n{}", hex::encode(Sha256::digest(request.as_bytes())));
    let parts: Vec<&str> = scope.split('/').collect();
    let mut key = hmac(format!("AWS4{secret}").as_bytes(), parts[0].as_bytes());
    for part in &parts[1..] {
        key = hmac(&key, part.as_bytes());
    }
    hex::encode(hmac(&key, to_sign.as_bytes()))
}

fn hmac(key: &[u8], data: &[u8]) -> Vec<u8> {
    let mut mac = <Hmac<Sha256> as KeyInit>::new_from_slice(key).expect("HMAC takes any key length");
    mac.update(data);
    mac.finalize().into_bytes().to_vec()
}

/// `20240827T000000Z` as seconds since the epoch.
fn parse_amz_date(s: &str) -> Option<i64> {
    let t = jiff::civil::DateTime::strptime("%Y%m%dT%H%M%SZ", s).ok()?;
    Some(t.to_zoned(jiff::tz::TimeZone::UTC).ok()?.timestamp().as_second())
}

fn format_time(secs: i64) -> String {
    jiff::Timestamp::from_second(secs).map(|t| t.to_string()).unwrap_or_else(|_| secs.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// aws-sdk-dsql's own test vector: key `akid`/`secret`, 2024-08-27T00:00:00Z, 450 s.
    const SDK_TOKEN: &str = "peccy.dsql.us-east-1.on.aws/?Action=DbConnect&X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Credential=akid%2F20240827%2Fus-east-1%2Fdsql%2Faws4_request&X-Amz-Date=20240827T000000Z&X-Amz-Expires=450&X-Amz-SignedHeaders=host&X-Amz-Signature=f5f2ad764ca5df44045d4ab6ccecba0eef941b0007e5765885a0b6ed3702a3f8";
    const SIGNED_AT: i64 = 1_724_716_800;

    fn creds() -> Vec<Credentials> {
        vec![Credentials { access_key_id: "akid".into(), secret_access_key: "secret".into() }]
    }

    fn expect(role: &str, now: i64) -> Expect<'_> {
        Expect { host: "peccy.dsql.us-east-1.on.aws", region: "us-east-1", role, now, max_age: None }
    }

    #[test]
    fn the_sdk_token_verifies_while_it_is_valid() {
        assert_eq!(verify(SDK_TOKEN, &creds(), &expect("app", SIGNED_AT + 10)), Ok(()));
        assert_eq!(verify(SDK_TOKEN, &creds(), &expect("app", SIGNED_AT + 450)), Ok(()));
    }

    #[test]
    fn expiry_role_key_host_and_tampering_are_refused() {
        assert!(matches!(verify(SDK_TOKEN, &creds(), &expect("app", SIGNED_AT + 451)), Err(Refusal::Expired(_))));
        let short = Expect { max_age: Some(60), ..expect("app", SIGNED_AT + 61) };
        assert!(matches!(verify(SDK_TOKEN, &creds(), &short), Err(Refusal::Expired(_))));
        assert!(matches!(verify(SDK_TOKEN, &creds(), &expect("app", SIGNED_AT - 3600)), Err(Refusal::NotYetValid(_))));
        assert!(matches!(verify(SDK_TOKEN, &creds(), &expect("admin", SIGNED_AT)), Err(Refusal::WrongAction { .. })));
        let other = vec![Credentials { access_key_id: "akid".into(), secret_access_key: "other".into() }];
        assert_eq!(verify(SDK_TOKEN, &other, &expect("app", SIGNED_AT)), Err(Refusal::BadSignature));
        let tampered = SDK_TOKEN.replace("X-Amz-Expires=450", "X-Amz-Expires=9000");
        assert_eq!(verify(&tampered, &creds(), &expect("app", SIGNED_AT)), Err(Refusal::BadSignature));
        let e = Expect { host: "other.dsql.us-east-1.on.aws", ..expect("app", SIGNED_AT) };
        assert!(matches!(verify(SDK_TOKEN, &creds(), &e), Err(Refusal::WrongHost(_))));
        let e = Expect { region: "eu-west-1", ..expect("app", SIGNED_AT) };
        assert!(matches!(verify(SDK_TOKEN, &creds(), &e), Err(Refusal::WrongScope(_))));
        assert_eq!(verify("", &creds(), &expect("app", SIGNED_AT)), Err(Refusal::Missing));
        assert!(matches!(verify("hunter2", &creds(), &expect("app", SIGNED_AT)), Err(Refusal::Malformed(_))));
        let unknown = SDK_TOKEN.replace("akid%2F", "nobody%2F");
        assert!(matches!(verify(&unknown, &creds(), &expect("app", SIGNED_AT)), Err(Refusal::UnknownKey(_))));
    }
}
