//! Column names followed through the changes inside a definition: a CHECK
//! or an index (`(lower(note)) WHERE (qty > 0)`) reads columns by name,
//! and `ALTER TABLE` keeps it bound to the same columns through a rename
//! and drops it with a column it reads. The rebuild does the same with the
//! text the catalog prints. Pure.

use crate::engine::plan::lexer::{Token, name_of, pieces};
use crate::engine::plan::quote::ident;

/// The pieces of `definition` that name a column: names that are not a
/// function's (followed by `(`), a qualified name's later part (after `.`)
/// or a type (after `::`). None when the text cannot be read.
fn column_names(definition: &str) -> Option<Vec<(std::ops::Range<usize>, String)>> {
    let pieces = pieces(definition).ok()?;
    let mut out = Vec::new();
    for (i, piece) in pieces.iter().enumerate() {
        let Some(name) = name_of(definition, piece) else { continue };
        let before = |back: usize| i.checked_sub(back).map(|j| &definition[pieces[j].at.clone()]);
        let called = pieces.get(i + 1).is_some_and(|p| p.token == Token::Open);
        let qualified = before(1) == Some(".");
        let cast = before(1) == Some(":") && before(2) == Some(":");
        if !called && !qualified && !cast {
            out.push((piece.at.clone(), name));
        }
    }
    Some(out)
}

/// Whether `definition` reads the column `column` (also when it cannot be
/// read: then it is treated as reading every column).
pub fn reads_column(definition: &str, column: &str) -> bool {
    column_names(definition).is_none_or(|names| names.iter().any(|(_, n)| n == column))
}

/// `definition` with each column named in `renames` (old, new) written by
/// its new name, all at once (so `a`→`b` with `b`→`a` swaps them); None when
/// the text cannot be read.
pub fn rename_columns(definition: &str, renames: &[(String, String)]) -> Option<String> {
    let names = column_names(definition)?;
    let mut out = String::with_capacity(definition.len());
    let mut last = 0;
    for (at, name) in names {
        if let Some((_, to)) = renames.iter().find(|(from, _)| *from == name) {
            out.push_str(&definition[last..at.start]);
            out.push_str(&ident(to));
            last = at.end;
        }
    }
    out.push_str(&definition[last..]);
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn renames(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs.iter().map(|(a, b)| (a.to_string(), b.to_string())).collect()
    }

    #[test]
    fn a_rename_follows_every_reference_and_nothing_else() {
        let def = "(lower(note), qty) WHERE ((qty > 0) AND (note IS NOT NULL))";
        assert_eq!(
            rename_columns(def, &renames(&[("note", "remark")])).unwrap(),
            "(lower(\"remark\"), qty) WHERE ((qty > 0) AND (\"remark\" IS NOT NULL))"
        );
        // A function or a type of the same name is not the column.
        assert_eq!(
            rename_columns("CHECK ((lower(lower) = (lower)::text))", &renames(&[("lower", "l2"), ("text", "t")]))
                .unwrap(),
            "CHECK ((lower(\"l2\") = (\"l2\")::text))"
        );
        assert_eq!(
            rename_columns("(\"Weird Name\", a)", &renames(&[("Weird Name", "w"), ("a", "Weird Name")])).unwrap(),
            "(\"w\", \"Weird Name\")",
            "all at once"
        );
        assert_eq!(
            rename_columns("CHECK ((s = 'qty'::text))", &renames(&[("qty", "q")])).unwrap(),
            "CHECK ((s = 'qty'::text))"
        );
    }

    #[test]
    fn a_definition_reads_a_column_by_its_name_as_a_name() {
        assert!(reads_column("(lower(email)) WHERE (cust IS NOT NULL)", "cust"));
        assert!(reads_column("(\"Cust Id\")", "Cust Id"));
        assert!(!reads_column("(customer)", "cust"));
        assert!(!reads_column("CHECK ((note <> 'cust'::text))", "cust"));
        assert!(reads_column("CHECK ((note <> 'open", "anything"), "unreadable: treated as reading it");
    }
}
