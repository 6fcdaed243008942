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

/// Quotes a string literal (used only where a statement cannot take a
/// parameter, such as DDL). Safe whatever `standard_conforming_strings` says:
/// a value with a backslash takes the `E'...'` form, in which backslashes are
/// escapes under either setting, and is written with each one doubled.
pub fn literal(value: &str) -> String {
    let escape = value.contains('\\');
    let mut out = String::with_capacity(value.len() + 3);
    if escape {
        out.push('E');
    }
    out.push('\'');
    for ch in value.chars() {
        if ch == '\'' || (escape && ch == '\\') {
            out.push(ch);
        }
        out.push(ch);
    }
    out.push('\'');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn literals_cannot_be_escaped_under_either_string_setting() {
        assert_eq!(literal("it's"), "'it''s'");
        // Under standard_conforming_strings = off, '\' would escape the quote
        // that follows; the E form doubles every backslash instead.
        assert_eq!(literal("a\\'); DROP TABLE t; --"), "E'a\\\\''); DROP TABLE t; --'");
        assert_eq!(literal("\\"), "E'\\\\'");
    }
}
