//! Quoting for PostgreSQL and DSQL: the one way an identifier or a literal
//! enters SQL text. Pure.

/// Quotes an identifier for PostgreSQL and DSQL: always double-quoted, inner quotes doubled.
pub fn ident(name: &str) -> String {
    let mut out = String::with_capacity(name.len() + 2);
    out.push('"');
    for ch in name.chars() {
        if ch == '"' {
            out.push('"');
        }
        out.push(ch);
    }
    out.push('"');
    out
}

/// Quotes a string literal (used only where a statement cannot take a parameter, such as DDL).
pub fn literal(value: &str) -> String {
    let mut out = String::with_capacity(value.len() + 2);
    out.push('\'');
    for ch in value.chars() {
        if ch == '\'' {
            out.push('\'');
        }
        out.push(ch);
    }
    out.push('\'');
    out
}
