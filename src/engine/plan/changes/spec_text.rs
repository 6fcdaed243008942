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

use crate::engine::plan::lexer::{Piece, Token, pieces};

/// Checks that the parentheses of `text` nest, that no `;` stands outside
/// quotes and that no comment hides what the engine writes after it.
fn one_piece(pieces: &[Piece]) -> Result<(), String> {
    if pieces.is_empty() {
        return Err("is empty".into());
    }
    let mut depth = 0usize;
    for piece in pieces {
        match piece.token {
            Token::Comment => return Err("holds a comment, which would hide what follows it".into()),
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
            _ => {}
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
    one_piece(&pieces(text)?)
}

/// Whether `text` can be one type name (`numeric(12,2)`, `timestamp(3) with
/// time zone`, `text[]`, `"My Type"`): no string constants either.
pub fn one_type(text: &str) -> Result<(), String> {
    let pieces = pieces(text)?;
    if pieces.iter().any(|p| p.token == Token::Text) {
        return Err("holds a string constant, which no type name has".into());
    }
    one_piece(&pieces)
}

/// Words that read like a call but are the grammar's own (`coalesce(a, b)`),
/// and so are no function in the catalog.
const SYNTAX_CALLS: [&str; 14] = [
    "coalesce",
    "nullif",
    "greatest",
    "least",
    "cast",
    "extract",
    "overlay",
    "position",
    "substring",
    "trim",
    "row",
    "array",
    "exists",
    "normalize",
];

/// SQL value functions written without parentheses, each different at each
/// transaction or session.
const CHANGING_VALUES: [&str; 8] = [
    "current_timestamp",
    "current_date",
    "current_time",
    "localtimestamp",
    "localtime",
    "current_user",
    "session_user",
    "current_role",
];

/// What an expression calls, for the server to say how each behaves: the
/// functions it names (lower case), and the value functions it reads that
/// give another value at each reading.
pub fn calls(text: &str) -> (Vec<String>, Vec<String>) {
    let Ok(pieces) = crate::engine::plan::lexer::pieces(text) else { return (Vec::new(), Vec::new()) };
    let mut functions = Vec::new();
    let mut changing = Vec::new();
    for (i, piece) in pieces.iter().enumerate() {
        if piece.token != Token::Word {
            continue;
        }
        let word = text[piece.at.clone()].to_lowercase();
        let called = pieces.get(i + 1).is_some_and(|p| p.token == Token::Open);
        if called && !SYNTAX_CALLS.contains(&word.as_str()) && !functions.contains(&word) {
            functions.push(word);
        } else if !called && CHANGING_VALUES.contains(&word.as_str()) {
            changing.push(word);
        }
    }
    (functions, changing)
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
    fn an_expression_names_the_functions_it_calls() {
        let (functions, changing) = calls("coalesce(created, now()) + round(x::numeric, 2) - CURRENT_TIMESTAMP");
        assert_eq!(functions, ["now", "round"]);
        assert_eq!(changing, ["current_timestamp"]);
        assert_eq!(calls("'now()'").0, Vec::<String>::new(), "a string is no call");
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
