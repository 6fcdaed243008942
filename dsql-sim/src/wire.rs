//! The PostgreSQL wire protocol (version 3), as far as a proxy needs it:
//! framing, the startup packet, and the few messages the stand-in reads,
//! rewrites or makes up. Sources: "Frontend/Backend Protocol", PostgreSQL 16
//! documentation, chapters 55.2 and 55.7.

use bytes::{Buf, BufMut, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

pub const SSL_REQUEST: i32 = 80_877_103;
pub const GSSENC_REQUEST: i32 = 80_877_104;
pub const CANCEL_REQUEST: i32 = 80_877_102;
pub const PROTOCOL_3: i32 = 196_608;

/// One typed message: its tag and body (without tag and length).
#[derive(Clone, Debug)]
pub struct Message {
    pub tag: u8,
    pub body: Vec<u8>,
}

impl Message {
    pub fn new(tag: u8, body: Vec<u8>) -> Self {
        Self { tag, body }
    }

    pub fn encode(&self, out: &mut BytesMut) {
        out.put_u8(self.tag);
        out.put_i32(self.body.len() as i32 + 4);
        out.put_slice(&self.body);
    }

    /// The first NUL-terminated string of the body (a Query's text, a
    /// CommandComplete's tag).
    pub fn cstr(&self, at: usize) -> (String, usize) {
        let rest = &self.body[at.min(self.body.len())..];
        let len = rest.iter().position(|b| *b == 0).unwrap_or(rest.len());
        (String::from_utf8_lossy(&rest[..len]).into_owned(), at + len + 1)
    }
}

/// Reads messages from one side; cancel-safe (bytes read stay in the buffer).
pub struct Reader<R> {
    inner: R,
    buf: BytesMut,
}

impl<R: AsyncRead + Unpin> Reader<R> {
    pub fn new(inner: R) -> Self {
        Self { inner, buf: BytesMut::with_capacity(16 * 1024) }
    }

    /// The next typed message; `None` at end of stream.
    pub async fn next(&mut self) -> std::io::Result<Option<Message>> {
        loop {
            if self.buf.len() >= 5 {
                let len = i32::from_be_bytes(self.buf[1..5].try_into().expect("4 bytes")) as usize;
                if len < 4 {
                    return Err(std::io::Error::other("bad message length"));
                }
                if self.buf.len() > len {
                    let tag = self.buf.get_u8();
                    self.buf.advance(4);
                    let body = self.buf.split_to(len - 4).to_vec();
                    return Ok(Some(Message { tag, body }));
                }
            }
            if self.inner.read_buf(&mut self.buf).await? == 0 {
                return Ok(None);
            }
        }
    }

    /// The untyped startup packet: its code and body.
    pub async fn startup(&mut self) -> std::io::Result<(i32, Vec<u8>)> {
        while self.buf.len() < 8 || self.buf.len() < i32::from_be_bytes(self.buf[0..4].try_into().expect("4")) as usize
        {
            if self.inner.read_buf(&mut self.buf).await? == 0 {
                return Err(std::io::ErrorKind::UnexpectedEof.into());
            }
        }
        let len = self.buf.get_i32() as usize;
        let code = self.buf.get_i32();
        Ok((code, self.buf.split_to(len - 8).to_vec()))
    }

    pub fn into_parts(self) -> (R, BytesMut) {
        (self.inner, self.buf)
    }
}

/// The `key\0value\0...` pairs of a startup packet.
pub fn startup_params(body: &[u8]) -> Vec<(String, String)> {
    let parts: Vec<String> = body.split(|b| *b == 0).map(|s| String::from_utf8_lossy(s).into_owned()).collect();
    parts.chunks(2).filter(|c| c.len() == 2 && !c[0].is_empty()).map(|c| (c[0].clone(), c[1].clone())).collect()
}

pub fn startup_packet(params: &[(&str, &str)]) -> Vec<u8> {
    let mut body = BytesMut::new();
    body.put_i32(PROTOCOL_3);
    for (k, v) in params {
        body.put_slice(k.as_bytes());
        body.put_u8(0);
        body.put_slice(v.as_bytes());
        body.put_u8(0);
    }
    body.put_u8(0);
    let mut out = BytesMut::new();
    out.put_i32(body.len() as i32 + 4);
    out.put_slice(&body);
    out.to_vec()
}

pub async fn send<W: AsyncWrite + Unpin>(w: &mut W, messages: &[Message]) -> std::io::Result<()> {
    let mut out = BytesMut::new();
    for m in messages {
        m.encode(&mut out);
    }
    w.write_all(&out).await?;
    w.flush().await
}

fn cstring(out: &mut Vec<u8>, s: &str) {
    out.extend_from_slice(s.as_bytes());
    out.push(0);
}

/// An ErrorResponse (`E`) with severity, SQLSTATE, message and optional detail.
pub fn error(severity: &str, code: &str, message: &str, detail: Option<&str>) -> Message {
    let mut body = Vec::new();
    for (field, value) in [(b'S', severity), (b'V', severity), (b'C', code), (b'M', message)] {
        body.push(field);
        cstring(&mut body, value);
    }
    if let Some(d) = detail {
        body.push(b'D');
        cstring(&mut body, d);
    }
    body.push(0);
    Message::new(b'E', body)
}

/// The SQLSTATE of an ErrorResponse.
pub fn error_code(m: &Message) -> Option<String> {
    let mut at = 0;
    while at < m.body.len() && m.body[at] != 0 {
        let field = m.body[at];
        let (value, next) = m.cstr(at + 1);
        if field == b'C' {
            return Some(value);
        }
        at = next;
    }
    None
}

pub fn query(sql: &str) -> Message {
    let mut body = Vec::new();
    cstring(&mut body, sql);
    Message::new(b'Q', body)
}

pub fn command_complete(tag: &str) -> Message {
    let mut body = Vec::new();
    cstring(&mut body, tag);
    Message::new(b'C', body)
}

pub fn ready(status: u8) -> Message {
    Message::new(b'Z', vec![status])
}

pub fn parameter_status(name: &str, value: &str) -> Message {
    let mut body = Vec::new();
    cstring(&mut body, name);
    cstring(&mut body, value);
    Message::new(b'S', body)
}

/// A Parse message's statement name and text.
pub fn parse_parts(m: &Message) -> (String, String, usize) {
    let (name, at) = m.cstr(0);
    let (sql, end) = m.cstr(at);
    (name, sql, end)
}

/// Parse with its text replaced, keeping the name and parameter types.
pub fn replace_parse(m: &Message, sql: &str) -> Message {
    let (name, _, end) = parse_parts(m);
    let mut body = Vec::new();
    cstring(&mut body, &name);
    cstring(&mut body, sql);
    body.extend_from_slice(&m.body[end.min(m.body.len())..]);
    Message::new(b'P', body)
}

/// A Bind's portal and statement names.
pub fn bind_names(m: &Message) -> (String, String) {
    let (portal, at) = m.cstr(0);
    let (statement, _) = m.cstr(at);
    (portal, statement)
}

/// A DataRow's columns, as text (NULL as `None`).
pub fn data_row(m: &Message) -> Vec<Option<String>> {
    let mut b = &m.body[..];
    if b.len() < 2 {
        return Vec::new();
    }
    let n = b.get_i16();
    let mut out = Vec::new();
    for _ in 0..n {
        if b.len() < 4 {
            break;
        }
        let len = b.get_i32();
        if len < 0 {
            out.push(None);
        } else {
            let len = (len as usize).min(b.len());
            out.push(Some(String::from_utf8_lossy(&b[..len]).into_owned()));
            b.advance(len);
        }
    }
    out
}

/// An ErrorResponse's message field.
pub fn error_message(m: &Message) -> String {
    let mut at = 0;
    while at < m.body.len() && m.body[at] != 0 {
        let field = m.body[at];
        let (value, next) = m.cstr(at + 1);
        if field == b'M' {
            return value;
        }
        at = next;
    }
    String::from("error")
}

/// A Parse of `sql` into statement `name`, with no parameter types.
pub fn parse(name: &str, sql: &str) -> Message {
    let mut body = Vec::new();
    cstring(&mut body, name);
    cstring(&mut body, sql);
    body.extend_from_slice(&0i16.to_be_bytes());
    Message::new(b'P', body)
}

pub async fn write_raw<W: AsyncWrite + Unpin>(w: &mut W, bytes: &[u8]) -> std::io::Result<()> {
    w.write_all(bytes).await?;
    w.flush().await
}

pub async fn read_exact_n<R: AsyncRead + Unpin>(r: &mut R, n: usize) -> std::io::Result<Vec<u8>> {
    let mut v = vec![0; n];
    r.read_exact(&mut v).await?;
    Ok(v)
}
