//! Spec expressions and types are data: before anything is planned, each is
//! read here as SQL tokens and must be one expression (or one type) that can
//! sit inside parentheses of its own. Pure.
//!
//! What this rules out is everything that could end the statement it is put
//! in or reach past its own parentheses: a `;` outside quotes, a parenthesis
//! closed that it did not open or left open, an unterminated string or
//! quoted name, and comments (a `--` would hide the rest of the line the
//! engine writes after it). The server's own parser then checks what is left
//! ([`crate::engine::steps::spec_check`]), and every statement that carries
//! spec text goes alone through the extended protocol.

/// One lexical piece of a spec text, as far as this check cares.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Token {
    /// A word, number, operator or quoted name: nothing that nests.
    Plain,
    /// A string constant (`'..'`, `E'..'`, `$tag$..$tag$`).
    Text,
    Open,
    Close,
    Semicolon,
}

/// Reads `text` into tokens, or says what makes it unreadable as one piece.
fn tokens(text: &str) -> Result<Vec<Token>, String> {
    let chars: Vec<char> = text.chars().collect();
    let mut out = Vec::new();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        let next = chars.get(i + 1).copied();
        match c {
            _ if c.is_whitespace() => i += 1,
            '-' if next == Some('-') => return Err("holds a comment (--), which would hide what follows it".into()),
            '/' if next == Some('*') => return Err("holds a comment (/* */); write the expression without it".into()),
            ';' => {
                out.push(Token::Semicolon);
                i += 1;
            }
            '(' => {
                out.push(Token::Open);
                i += 1;
            }
            ')' => {
                out.push(Token::Close);
                i += 1;
            }
            '\'' => {
                i = quoted_end(&chars, i + 1, '\'', false).ok_or("leaves a string constant open")?;
                out.push(Token::Text);
            }
            'e' | 'E' if next == Some('\'') && starts_token(&chars, i) => {
                i = quoted_end(&chars, i + 2, '\'', true).ok_or("leaves a string constant open")?;
                out.push(Token::Text);
            }
            '"' => {
                i = quoted_end(&chars, i + 1, '"', false).ok_or("leaves a quoted name open")?;
                out.push(Token::Plain);
            }
            '$' if starts_token(&chars, i) => match dollar_tag(&chars, i) {
                Some(tag) => {
                    let body = i + tag.len();
                    let end = find(&chars, body, &tag).ok_or("leaves a dollar-quoted string open")?;
                    i = end + tag.len();
                    out.push(Token::Text);
                }
                // `$1` and the like: a parameter, taken as a word.
                None => {
                    i += 1;
                    out.push(Token::Plain);
                }
            },
            _ => {
                i += 1;
                out.push(Token::Plain);
            }
        }
    }
    Ok(out)
}

/// Whether position `i` starts a token (a letter right before it would make
/// `e'` or `$` part of a word: `some$var`, `mye'`).
fn starts_token(chars: &[char], i: usize) -> bool {
    i == 0 || !(chars[i - 1].is_alphanumeric() || chars[i - 1] == '_' || chars[i - 1] == '$')
}

/// The index just past the closing `quote` of a quoted piece whose body
/// starts at `from`; a doubled quote is one quote inside, and with
/// `backslash` a backslash escapes the next character.
fn quoted_end(chars: &[char], from: usize, quote: char, backslash: bool) -> Option<usize> {
    let mut i = from;
    while i < chars.len() {
        match chars[i] {
            '\\' if backslash => i += 2,
            c if c == quote && chars.get(i + 1) == Some(&quote) => i += 2,
            c if c == quote => return Some(i + 1),
            _ => i += 1,
        }
    }
    None
}

/// The `$tag$` opening at `i`, when it is one.
fn dollar_tag(chars: &[char], i: usize) -> Option<Vec<char>> {
    let mut j = i + 1;
    while j < chars.len() && (chars[j].is_alphanumeric() || chars[j] == '_') {
        j += 1;
    }
    let tag_body = &chars[i + 1..j];
    if chars.get(j) != Some(&'$') || tag_body.first().is_some_and(|c| c.is_ascii_digit()) {
        return None;
    }
    Some(chars[i..=j].to_vec())
}

fn find(chars: &[char], from: usize, needle: &[char]) -> Option<usize> {
    (from..=chars.len().saturating_sub(needle.len())).find(|&i| chars[i..].starts_with(needle))
}

/// Checks that the parentheses of `tokens` nest and that no `;` stands outside quotes.
fn one_piece(tokens: &[Token]) -> Result<(), String> {
    if tokens.is_empty() {
        return Err("is empty".into());
    }
    let mut depth = 0usize;
    for token in tokens {
        match token {
            Token::Semicolon => {
                return Err(
                    "holds a ';' outside quotes: a spec field is one expression, never a second statement".into()
                );
            }
            Token::Open => depth += 1,
            Token::Close => {
                depth = depth.checked_sub(1).ok_or(
                    "closes a parenthesis it did not open, which would reach past its own place in the statement",
                )?
            }
            Token::Plain | Token::Text => {}
        }
    }
    if depth > 0 {
        return Err("leaves a parenthesis open".into());
    }
    Ok(())
}

/// Whether `text` can be one SQL expression: the first check, before the
/// server's parser reads it.
pub fn one_expression(text: &str) -> Result<(), String> {
    one_piece(&tokens(text)?)
}

/// Whether `text` can be one type name (`numeric(12,2)`, `timestamp(3) with
/// time zone`, `text[]`, `"My Type"`): no string constants either.
pub fn one_type(text: &str) -> Result<(), String> {
    let tokens = tokens(text)?;
    if tokens.contains(&Token::Text) {
        return Err("holds a string constant, which no type name has".into());
    }
    one_piece(&tokens)
}

/// Every spec text of `change` (number `index`) with its field and whether
/// it is a type: what both checks go through.
pub fn texts_of(change: &crate::api::changes::Change, index: usize) -> Vec<SpecText<'_>> {
    use crate::api::changes::ChangeKind;
    let at = |key: &str, sub: &str| format!("spec.changes[{index}].{key}.{sub}");
    let mut out = Vec::new();
    match change.kind() {
        Ok(ChangeKind::AlterColumn(a)) => {
            let key = "alterColumn";
            out.extend(a.data_type.as_deref().map(|t| SpecText::ty(at(key, "type"), t)));
            out.extend(a.using.as_deref().map(|t| SpecText::expr(at(key, "using"), t)));
            out.extend(a.reverse_using.as_deref().map(|t| SpecText::expr(at(key, "reverseUsing"), t)));
            out.extend(a.default.as_deref().map(|t| SpecText::expr(at(key, "default"), t)));
        }
        Ok(ChangeKind::AddColumn(a)) => {
            out.push(SpecText::ty(at("addColumn", "type"), &a.data_type));
            out.extend(a.default.as_deref().map(|t| SpecText::expr(at("addColumn", "default"), t)));
        }
        Ok(ChangeKind::AddConstraint(c)) => {
            out.extend(c.check.as_deref().map(|t| SpecText::expr(at("addConstraint", "check"), t)));
        }
        _ => {}
    }
    out
}

/// A type or an expression the spec gives as SQL text, and where.
#[derive(Clone, Debug, PartialEq)]
pub struct SpecText<'a> {
    pub field: String,
    pub text: &'a str,
    pub is_type: bool,
}

impl<'a> SpecText<'a> {
    fn ty(field: String, text: &'a str) -> Self {
        Self { field, text, is_type: true }
    }

    fn expr(field: String, text: &'a str) -> Self {
        Self { field, text, is_type: false }
    }

    /// The lexical check of this text.
    pub fn check(&self) -> Result<(), String> {
        if self.is_type { one_type(self.text) } else { one_expression(self.text) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expressions_that_stay_in_their_parentheses_pass() {
        for ok in [
            "amount >= 0",
            "round(amount::numeric, 2)",
            "'n/a'",
            "'it''s; fine'",
            "E'a\\'; b'",
            "$$semi;colon)$$",
            "$x$ ) ; $x$",
            "coalesce(\"Weird;)Name\", 0)",
            "(SELECT max(x) FROM t)",
            "now()",
            "'t-'::text || md5(random()::text)",
            "'; DROP TABLE x; SELECT '",
        ] {
            assert_eq!(one_expression(ok), Ok(()), "{ok}");
        }
    }

    #[test]
    fn what_could_end_or_escape_the_statement_is_refused_with_the_reason() {
        let said = |text: &str| one_expression(text).unwrap_err();
        assert!(said("'n/a'; DROP TABLE precious; SELECT 1").contains("';' outside quotes"));
        assert!(said("1) FROM t UNION (SELECT 2").contains("did not open"));
        assert!(said("(1").contains("parenthesis open"));
        assert!(said("1 -- the rest").contains("comment"));
        assert!(said("1 /* x */").contains("comment"));
        assert!(said("'open").contains("string constant open"));
        assert!(said("\"open").contains("quoted name open"));
        assert!(said("$a$ never closed").contains("dollar-quoted"));
        assert!(said("  ").contains("empty"));
    }

    #[test]
    fn a_type_is_words_numbers_and_brackets_only() {
        for ok in ["numeric(12,2)", "timestamp(3) with time zone", "text[]", "\"My Type\"", "public.mood", "varchar(8)"]
        {
            assert_eq!(one_type(ok), Ok(()), "{ok}");
        }
        assert!(one_type("text); DROP TABLE x; --").is_err());
        assert!(one_type("text DEFAULT 'x'").unwrap_err().contains("string constant"));
        assert!(one_type("'; DROP TABLE x; SELECT '").unwrap_err().contains("string constant"));
    }

    #[test]
    fn every_text_of_a_change_is_named_by_its_field() {
        let changes: Vec<crate::api::changes::Change> = serde_norway::from_str(
            r#"
- alterColumn: {column: a, type: int, using: "a::int", reverseUsing: "a::text", default: "0"}
- addColumn: {name: b, type: text, default: "'x'"}
- addConstraint: {name: c, check: "a > 0"}
- dropColumn: {name: d}
"#,
        )
        .unwrap();
        let fields: Vec<String> =
            changes.iter().enumerate().flat_map(|(i, c)| texts_of(c, i)).map(|t| t.field).collect();
        assert_eq!(
            fields,
            [
                "spec.changes[0].alterColumn.type",
                "spec.changes[0].alterColumn.using",
                "spec.changes[0].alterColumn.reverseUsing",
                "spec.changes[0].alterColumn.default",
                "spec.changes[1].addColumn.type",
                "spec.changes[1].addColumn.default",
                "spec.changes[2].addConstraint.check",
            ]
        );
    }
}
