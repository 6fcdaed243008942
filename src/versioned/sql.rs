//! A migration file's SQL as statements, by the server's own grammar
//! (libpg_query, through `pg_query`): dollar quoting, `E''` strings, nested
//! comments and `BEGIN ATOMIC` bodies split as the server splits them. Each
//! statement keeps its line in the file and its parse tree. psql's
//! meta-commands (`\i`, `\set`) are not SQL: refused by line. Pure.

use pg_query::protobuf::{Node, ParseResult, TypeName};
use pg_query::{NodeEnum, ParserOptions};

use super::files::VersionedFile;
use crate::engine::plan::lexer::{Token, pieces};
use crate::engine::plan::shape::TableName;

/// One statement of a file.
#[derive(Clone, Debug)]
pub struct Statement {
    /// The statement as written (DSQL's `ASYNC` keyword left out).
    pub text: String,
    /// The file and the line it starts on.
    pub file: String,
    pub line: usize,
    pub tree: NodeEnum,
}

impl Statement {
    /// `V3__x.sql:12`.
    pub fn at(&self) -> String {
        format!("{}:{}", self.file, self.line)
    }
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SqlError {
    #[error("{file}:{line}: a psql meta-command ({command}) is not SQL; only psql runs it")]
    MetaCommand { file: String, line: usize, command: String },
    #[error("{file}:{line}: {message}")]
    Syntax { file: String, line: usize, message: String },
}

/// The stack the server's parser gets: libpg_query's grammar needs more
/// than a tokio worker's 2 MiB (measured: the example files overflow 256 KiB
/// and pass at 3 MiB), so its work runs on a thread of its own.
const PARSER_STACK: usize = 16 << 20;

/// Runs `f` (which parses or deparses SQL) on a thread with the parser's
/// stack, and waits for it.
pub fn on_parser_stack<T: Send>(f: impl FnOnce() -> T + Send) -> T {
    std::thread::scope(|scope| {
        std::thread::Builder::new()
            .name("sql-parser".into())
            .stack_size(PARSER_STACK)
            .spawn_scoped(scope, f)
            .expect("a thread for the SQL parser")
            .join()
            .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
    })
}

/// The statements of `file`'s up part, in order.
pub fn statements(file: &VersionedFile) -> Result<Vec<Statement>, SqlError> {
    let line_of = |offset: usize| file.first_line + file.sql[..offset].matches('\n').count();
    let syntax =
        |offset: usize, message: String| SqlError::Syntax { file: file.file.clone(), line: line_of(offset), message };
    let text = without_async(&file.sql);
    if let Some(offset) = meta_command(&text) {
        let command = text[offset..].lines().next().unwrap_or("").trim().to_string();
        return Err(SqlError::MetaCommand { file: file.file.clone(), line: line_of(offset), command });
    }
    let parts = match pg_query::split_with_parser(&text) {
        Ok(parts) => parts,
        Err(e) => return Err(locate_syntax_error(&text, e.to_string(), syntax)),
    };
    let mut out = Vec::new();
    for part in parts {
        let offset = part.as_ptr() as usize - text.as_ptr() as usize;
        let lead = part.len() - part.trim_start().len();
        let part = part.trim();
        if part.is_empty() {
            continue;
        }
        let parsed = pg_query::parse(part, ParserOptions::DEFAULT).map_err(|e| syntax(offset + lead, e.to_string()))?;
        for raw in &parsed.protobuf.stmts {
            let Some(tree) = raw.stmt.as_ref().and_then(|n| n.node.clone()) else { continue };
            out.push(Statement { text: part.to_string(), file: file.file.clone(), line: line_of(offset + lead), tree });
        }
    }
    Ok(out)
}

/// The statement that does not parse, found by the scanner's split (which
/// never fails) and a parse of each piece: its line and the server's message.
fn locate_syntax_error(text: &str, whole: String, syntax: impl Fn(usize, String) -> SqlError) -> SqlError {
    for part in pg_query::split_with_scanner(text).unwrap_or_default() {
        if let Err(e) = pg_query::parse(part, ParserOptions::DEFAULT) {
            let offset = part.as_ptr() as usize - text.as_ptr() as usize;
            let lead = part.len() - part.trim_start().len();
            return syntax(offset + lead, e.to_string());
        }
    }
    syntax(0, whole)
}

/// The text with DSQL's `CREATE [UNIQUE] INDEX ASYNC` and `ALTER TABLE
/// ASYNC` keyword blanked (same length, so offsets and lines hold): the
/// PostgreSQL grammar does not know it, and the target's rules decide.
fn without_async(sql: &str) -> String {
    let Ok(pieces) = pieces(sql) else { return sql.to_string() };
    let words: Vec<(String, std::ops::Range<usize>)> = pieces
        .iter()
        .filter(|p| !matches!(p.token, Token::Comment))
        .map(|p| (sql[p.at.clone()].to_ascii_uppercase(), p.at.clone()))
        .collect();
    let mut out = sql.to_string();
    for (i, (word, at)) in words.iter().enumerate() {
        let before = |n: usize| i.checked_sub(n).map(|j| words[j].0.as_str());
        let after_index = word == "ASYNC"
            && before(1) == Some("INDEX")
            && (before(2) == Some("CREATE") || (before(2) == Some("UNIQUE") && before(3) == Some("CREATE")));
        let after_table = word == "ASYNC" && before(1) == Some("TABLE") && before(2) == Some("ALTER");
        if after_index || after_table {
            out.replace_range(at.clone(), &" ".repeat(at.len()));
        }
    }
    out
}

/// Where a line starts with a backslash outside any string or comment.
fn meta_command(sql: &str) -> Option<usize> {
    let pieces = pieces(sql).ok()?;
    pieces.iter().map(|p| p.at.start).find(|&start| {
        sql[start..].starts_with('\\') && sql[..start].rsplit('\n').next().is_some_and(|l| l.trim().is_empty())
    })
}

/// A type as SQL text (`numeric(12, 2)`), by the server's deparser.
pub fn type_text(type_name: &TypeName) -> String {
    let mut select = template("SELECT NULL::int");
    if let Some(NodeEnum::TypeCast(cast)) = first_target(&mut select) {
        cast.type_name = Some(type_name.clone());
    }
    deparse(&select).trim_start_matches("SELECT NULL::").to_string()
}

/// An expression as SQL text, by the server's deparser.
pub fn expr_text(expr: &Node) -> String {
    let mut select = template("SELECT 1");
    if let (Some(target), Some(node)) = (first_target(&mut select), expr.node.clone()) {
        *target = node;
    }
    deparse(&select).trim_start_matches("SELECT ").to_string()
}

/// A whole statement as SQL text, by the server's deparser.
pub fn statement_text(tree: &NodeEnum) -> String {
    let mut result = template("SELECT 1");
    result.stmts[0].stmt = Some(Box::new(Node { node: Some(tree.clone()) }));
    deparse(&result)
}

fn template(sql: &str) -> ParseResult {
    pg_query::parse(sql, ParserOptions::DEFAULT).expect("a fixed template parses").protobuf
}

fn first_target(result: &mut ParseResult) -> Option<&mut NodeEnum> {
    let stmt = result.stmts.first_mut()?.stmt.as_mut()?.node.as_mut()?;
    let NodeEnum::SelectStmt(select) = stmt else { return None };
    let NodeEnum::ResTarget(target) = select.target_list.first_mut()?.node.as_mut()? else { return None };
    target.val.as_mut()?.node.as_mut()
}

fn deparse(result: &ParseResult) -> String {
    // Deparsing what the parser produced does not fail; a failure would be
    // a libpg_query bug, shown as the error text rather than a panic.
    pg_query::deparse(result, Default::default()).unwrap_or_else(|e| format!("/* cannot deparse: {e} */"))
}

/// The table a RangeVar names (schema `public` when unqualified).
pub fn table_of(relation: Option<&pg_query::protobuf::RangeVar>) -> TableName {
    let r = relation.cloned().unwrap_or_default();
    let schema = if r.schemaname.is_empty() { "public".to_string() } else { r.schemaname };
    TableName::new(schema, r.relname)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::versioned::files::{Version, checksum};

    fn file(sql: &str, first_line: usize) -> VersionedFile {
        VersionedFile {
            version: Version::new("1"),
            description: String::new(),
            file: "V1__x.sql".into(),
            sql: sql.into(),
            first_line,
            checksum: checksum(sql),
            repeatable: false,
        }
    }

    fn texts(sql: &str) -> Vec<(usize, String)> {
        statements(&file(sql, 1)).unwrap().into_iter().map(|s| (s.line, s.text)).collect()
    }

    #[test]
    fn the_parser_gets_a_stack_it_does_not_overflow_on_a_small_thread() {
        let sql =
            "CREATE TABLE t (id bigint PRIMARY KEY);\nALTER TABLE t ALTER COLUMN id TYPE numeric USING id::numeric;\n";
        let small = std::thread::Builder::new()
            .stack_size(256 * 1024)
            .spawn(move || on_parser_stack(|| statements(&file(sql, 1)).map(|s| s.len())));
        assert_eq!(small.unwrap().join().unwrap(), Ok(2));
    }

    #[test]
    fn statements_split_as_the_server_splits_them_with_their_lines() {
        let sql = "/* a /* nested */ comment; */\n\
                   CREATE TABLE t (id bigint PRIMARY KEY, note text);\n\
                   INSERT INTO t VALUES (1, E'it''s; \\'quoted\\'');\n\
                   CREATE FUNCTION f() RETURNS int LANGUAGE sql\n\
                   BEGIN ATOMIC\n  SELECT 1;\n  SELECT 2;\nEND;\n\
                   DO $body$ BEGIN PERFORM 1; END $body$;\n\
                   -- trailing comment; with a semicolon\n";
        let got = texts(sql);
        assert_eq!(got.len(), 4, "{got:#?}");
        assert_eq!(got[0], (2, "CREATE TABLE t (id bigint PRIMARY KEY, note text)".to_string()));
        assert_eq!(got[1].0, 3);
        assert!(got[2].1.ends_with("END") && got[2].0 == 4, "{:?}", got[2]);
        assert_eq!(got[3], (9, "DO $body$ BEGIN PERFORM 1; END $body$".to_string()));
    }

    #[test]
    fn lines_count_from_where_the_up_part_starts_in_its_file() {
        let got = statements(&file("\nSELECT 1;\n\nSELECT 2;\n", 5)).unwrap();
        assert_eq!(got.iter().map(|s| s.line).collect::<Vec<_>>(), [6, 8]);
        assert_eq!(got[1].at(), "V1__x.sql:8");
    }

    #[test]
    fn meta_commands_are_refused_by_line_but_not_inside_strings() {
        let err = statements(&file("SELECT 1;\n\\i other.sql\n", 1)).unwrap_err();
        assert_eq!(err, SqlError::MetaCommand { file: "V1__x.sql".into(), line: 2, command: "\\i other.sql".into() });
        assert!(statements(&file("SELECT $$\n\\n$$;\n", 1)).is_ok(), "inside a dollar-quoted string");
    }

    #[test]
    fn a_syntax_error_names_its_line() {
        let err = statements(&file("SELECT 1;\n\nCREAT TABLE x ();\n", 1)).unwrap_err();
        assert!(matches!(&err, SqlError::Syntax { line: 3, .. }), "{err}");
    }

    #[test]
    fn dsql_async_keywords_are_read_as_plain_statements() {
        let got = statements(&file(
            "CREATE UNIQUE INDEX ASYNC t_u ON t (code);\nALTER TABLE ASYNC t VALIDATE CONSTRAINT c;",
            1,
        ))
        .unwrap();
        assert!(matches!(got[0].tree, NodeEnum::IndexStmt(_)));
        assert!(matches!(got[1].tree, NodeEnum::AlterTableStmt(_)));
    }

    #[test]
    fn types_expressions_and_statements_come_back_as_sql_text() {
        let got = statements(&file("ALTER TABLE t ALTER COLUMN c TYPE numeric(12,2) USING round(c::numeric, 2);", 1))
            .unwrap();
        let NodeEnum::AlterTableStmt(alter) = &got[0].tree else { panic!() };
        let Some(NodeEnum::AlterTableCmd(cmd)) = &alter.cmds[0].node else { panic!() };
        let Some(NodeEnum::ColumnDef(def)) = cmd.def.as_ref().and_then(|d| d.node.as_ref()) else { panic!() };
        assert_eq!(type_text(def.type_name.as_ref().unwrap()), "numeric(12, 2)");
        assert_eq!(expr_text(def.raw_default.as_ref().unwrap()), "round(c::numeric, 2)");
        assert_eq!(
            statement_text(&got[0].tree),
            "ALTER TABLE t ALTER COLUMN c TYPE numeric(12, 2) USING round(c::numeric, 2)"
        );
    }
}
