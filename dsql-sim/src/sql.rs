//! Just enough SQL to act as DSQL does: statements split and tokenized
//! (quotes, dollar quotes and comments respected), each one classified, and
//! the statements DSQL refuses recognized. Pure.

/// One lexical token with its place in the statement text.
#[derive(Clone, Debug, PartialEq)]
pub enum Tok {
    /// An unquoted word, lower-cased.
    Word(String),
    /// A double-quoted identifier, exactly as written inside the quotes.
    Quoted(String),
    /// A string, number or dollar-quoted body: never a name.
    Literal,
    Punct(char),
}

#[derive(Clone, Debug)]
pub struct Token {
    pub tok: Tok,
    pub start: usize,
    pub end: usize,
}

/// Tokenizes `sql`, dropping comments and whitespace.
pub fn tokenize(sql: &str) -> Vec<Token> {
    let b = sql.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < b.len() {
        let c = b[i];
        let start = i;
        if c.is_ascii_whitespace() {
            i += 1;
        } else if c == b'-' && b.get(i + 1) == Some(&b'-') {
            while i < b.len() && b[i] != b'\n' {
                i += 1;
            }
        } else if c == b'/' && b.get(i + 1) == Some(&b'*') {
            i += 2;
            while i + 1 < b.len() && !(b[i] == b'*' && b[i + 1] == b'/') {
                i += 1;
            }
            i = (i + 2).min(b.len());
        } else if c == b'\'' {
            i += 1;
            while i < b.len() {
                let escaped = b[i] == b'\\' && start > 0 && matches!(b[start - 1], b'e' | b'E');
                if (b[i] == b'\'' && b.get(i + 1) == Some(&b'\'')) || escaped {
                    i += 2;
                } else if b[i] == b'\'' {
                    break;
                } else {
                    i += 1;
                }
            }
            i = (i + 1).min(b.len());
            out.push(Token { tok: Tok::Literal, start, end: i });
        } else if c == b'"' {
            let mut name = String::new();
            i += 1;
            while i < b.len() {
                if b[i] == b'"' && b.get(i + 1) == Some(&b'"') {
                    name.push('"');
                    i += 2;
                } else if b[i] == b'"' {
                    break;
                } else {
                    let ch = sql[i..].chars().next().expect("in bounds");
                    name.push(ch);
                    i += ch.len_utf8();
                }
            }
            i = (i + 1).min(b.len());
            out.push(Token { tok: Tok::Quoted(name), start, end: i });
        } else if c == b'$'
            && let Some(tag_len) = dollar_tag(&b[i..])
        {
            let tag = &sql[i..i + tag_len];
            let body = i + tag_len;
            i = sql[body..].find(tag).map_or(b.len(), |at| body + at + tag_len);
            out.push(Token { tok: Tok::Literal, start, end: i });
        } else if c.is_ascii_digit() {
            while i < b.len() && (b[i].is_ascii_alphanumeric() || b[i] == b'.') {
                i += 1;
            }
            out.push(Token { tok: Tok::Literal, start, end: i });
        } else if c.is_ascii_alphabetic() || c == b'_' || c >= 0x80 {
            while i < b.len() && (b[i].is_ascii_alphanumeric() || b[i] == b'_' || b[i] == b'$' || b[i] >= 0x80) {
                i += 1;
            }
            // A word glued to a quote (E'..', U&'..') is a literal's prefix.
            if i < b.len() && b[i] == b'\'' && matches!(&sql[start..i], "E" | "e") {
                continue;
            }
            out.push(Token { tok: Tok::Word(sql[start..i].to_ascii_lowercase()), start, end: i });
        } else {
            i += 1;
            out.push(Token { tok: Tok::Punct(c as char), start, end: i });
        }
    }
    out
}

/// `$tag$` or `$$` at the start of `b`: its length.
fn dollar_tag(b: &[u8]) -> Option<usize> {
    let mut j = 1;
    while j < b.len() && (b[j].is_ascii_alphanumeric() || b[j] == b'_') {
        j += 1;
    }
    (b.get(j) == Some(&b'$') && !b[1..j].first().is_some_and(u8::is_ascii_digit)).then_some(j + 1)
}

/// The statements of a simple query, as text, split at top-level `;`.
pub fn split(sql: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut from = 0;
    for t in tokenize(sql) {
        if t.tok == Tok::Punct(';') {
            out.push(sql[from..t.start].trim().to_string());
            from = t.end;
        }
    }
    out.push(sql[from..].trim().to_string());
    out.retain(|s| !s.is_empty());
    out
}

/// What a statement does, as far as DSQL's rules care.
#[derive(Clone, Debug, PartialEq)]
pub enum Kind {
    Begin,
    Commit,
    Rollback,
    /// Reads only.
    Query,
    /// Changes rows of `table` (INSERT, UPDATE, DELETE, MERGE, a data-changing WITH).
    Dml {
        table: Option<String>,
    },
    /// Changes the schema; `table` is the table it changes, when it names one.
    Ddl {
        table: Option<String>,
    },
    /// `CREATE [UNIQUE] INDEX ASYNC`: DSQL's background build.
    CreateIndexAsync {
        name: String,
        table: String,
    },
    /// `ALTER TABLE ASYNC t VALIDATE CONSTRAINT c`: a validation as a job
    /// (alter-table-syntax-support.html).
    ValidateAsync {
        constraint: String,
        table: String,
    },
    Call,
    /// SET, SHOW, RESET, DISCARD and the like.
    Session,
}

/// A statement: its text, tokens and kind, and a short label such as
/// `ALTER TABLE ... RENAME TO` for the statement-kind ledger.
#[derive(Clone, Debug)]
pub struct Statement {
    pub sql: String,
    pub tokens: Vec<Token>,
    pub kind: Kind,
}

impl Statement {
    pub fn parse(sql: &str) -> Self {
        let tokens = tokenize(sql);
        let kind = classify(&tokens);
        Self { sql: sql.to_string(), tokens, kind }
    }

    fn word(&self, i: usize) -> &str {
        match self.tokens.get(i).map(|t| &t.tok) {
            Some(Tok::Word(w)) => w,
            _ => "",
        }
    }

    fn has_word(&self, word: &str) -> bool {
        self.tokens.iter().any(|t| matches!(&t.tok, Tok::Word(w) if w == word))
    }

    /// `SHOW <setting>`.
    pub fn is_show(&self, setting: &str) -> bool {
        self.tokens.len() == 2 && self.word(0) == "show" && self.word(1) == setting
    }

    /// Every name the statement mentions (unqualified, as the catalog spells it).
    pub fn names(&self) -> Vec<String> {
        self.tokens
            .iter()
            .filter_map(|t| match &t.tok {
                Tok::Word(w) => Some(w.clone()),
                Tok::Quoted(q) => Some(q.clone()),
                _ => None,
            })
            .collect()
    }

    /// The unquoted words, in order (keywords and plain names).
    pub(crate) fn words(&self) -> Vec<&str> {
        self.tokens
            .iter()
            .filter_map(|t| match &t.tok {
                Tok::Word(w) => Some(w.as_str()),
                _ => None,
            })
            .collect()
    }

    /// Whether the words `phrase` follow each other somewhere.
    fn has_phrase(&self, phrase: &[&str]) -> bool {
        self.words().windows(phrase.len()).any(|w| w == phrase)
    }

    /// The statement's kind for the ledger: its leading keywords, and the
    /// clause that says what an ALTER or CREATE does.
    pub fn label(&self) -> String {
        let words = self.words();
        let first = words.first().copied().unwrap_or("");
        let mut label = match first {
            "create" | "drop" | "alter" | "comment" | "grant" | "revoke" => {
                let object = words.iter().skip(1).find(|w| !matches!(**w, "unique" | "or" | "replace" | "unlogged"));
                format!("{first} {}", object.copied().unwrap_or(""))
            }
            _ => first.to_string(),
        };
        if first == "create" && words.contains(&"async") {
            label.push_str(" async");
        }
        if first == "alter" {
            for clause in [
                "rename",
                "restart",
                "add generated",
                "set generated",
                "drop default",
                "drop identity",
                "owner",
                "enable row",
                "replica identity",
                "set",
            ] {
                let parts: Vec<&str> = clause.split(' ').collect();
                if words.windows(parts.len()).any(|w| w == parts.as_slice()) {
                    label = format!("{label} ... {clause}");
                    break;
                }
            }
        }
        if first == "insert" && words.contains(&"conflict") {
            label.push_str(" ... on conflict");
        }
        if first == "with" {
            for verb in ["insert", "update", "delete"] {
                if words.contains(&verb) {
                    label = format!("with ... {verb}");
                    break;
                }
            }
        }
        label.to_ascii_uppercase()
    }
}

fn name_at(tokens: &[Token], mut i: usize) -> Option<(String, usize)> {
    let mut last = None;
    loop {
        match tokens.get(i).map(|t| &t.tok) {
            Some(Tok::Word(w)) => last = Some(w.clone()),
            Some(Tok::Quoted(q)) => last = Some(q.clone()),
            _ => return last.map(|l| (l, i)),
        }
        if tokens.get(i + 1).map(|t| &t.tok) == Some(&Tok::Punct('.')) {
            i += 2;
        } else {
            return last.map(|l| (l, i + 1));
        }
    }
}

/// Skips `if [not] exists` and `only`.
fn skip_noise(tokens: &[Token], mut i: usize) -> usize {
    loop {
        let w = |k: usize| match tokens.get(k).map(|t| &t.tok) {
            Some(Tok::Word(w)) => w.as_str(),
            _ => "",
        };
        if w(i) == "if" && w(i + 1) == "not" && w(i + 2) == "exists" {
            i += 3;
        } else if w(i) == "if" && w(i + 1) == "exists" {
            i += 2;
        } else if w(i) == "only" || w(i) == "concurrently" || w(i) == "async" {
            i += 1;
        } else {
            return i;
        }
    }
}

fn classify(tokens: &[Token]) -> Kind {
    let word = |i: usize| match tokens.get(i).map(|t| &t.tok) {
        Some(Tok::Word(w)) => w.as_str(),
        _ => "",
    };
    let find = |w: &str| tokens.iter().position(|t| matches!(&t.tok, Tok::Word(x) if x == w));
    match word(0) {
        "begin" | "start" => Kind::Begin,
        "commit" | "end" => Kind::Commit,
        "rollback" | "abort" => Kind::Rollback,
        "select" | "values" | "table" | "explain" => Kind::Query,
        "call" => Kind::Call,
        "set" | "show" | "reset" | "discard" | "deallocate" | "listen" | "unlisten" => Kind::Session,
        "insert" => Kind::Dml { table: find("into").and_then(|i| name_at(tokens, i + 1)).map(|n| n.0) },
        "update" => Kind::Dml { table: name_at(tokens, skip_noise(tokens, 1)).map(|n| n.0) },
        "delete" | "merge" => Kind::Dml { table: name_at(tokens, skip_noise(tokens, 2)).map(|n| n.0) },
        "with" => {
            if let Some(i) = find("insert") {
                Kind::Dml { table: name_at(tokens, i + 2).map(|n| n.0) }
            } else if let Some(i) = find("update") {
                Kind::Dml { table: name_at(tokens, skip_noise(tokens, i + 1)).map(|n| n.0) }
            } else if let Some(i) = find("delete") {
                Kind::Dml { table: name_at(tokens, skip_noise(tokens, i + 2)).map(|n| n.0) }
            } else {
                Kind::Query
            }
        }
        "create" if find("index").is_some_and(|i| i <= 2) => {
            let on = find("on");
            let table = on.and_then(|i| name_at(tokens, skip_noise(tokens, i + 1))).map(|n| n.0);
            let at = skip_noise(tokens, find("index").expect("found") + 1);
            let name = if Some(at) == on { None } else { name_at(tokens, at).map(|n| n.0) };
            match (find("async"), name, table) {
                (Some(_), Some(name), Some(table)) => Kind::CreateIndexAsync { name, table },
                (_, _, table) => Kind::Ddl { table },
            }
        }
        "alter" if word(1) == "table" && word(2) == "async" => {
            let table = name_at(tokens, skip_noise(tokens, 3)).map(|n| n.0);
            let constraint = find("constraint").and_then(|i| name_at(tokens, i + 1)).map(|n| n.0);
            match (find("validate"), table, constraint) {
                (Some(_), Some(table), Some(constraint)) => Kind::ValidateAsync { constraint, table },
                (_, table, _) => Kind::Ddl { table },
            }
        }
        "create" | "alter" | "drop" => {
            let object = (1..4).find(|i| matches!(word(*i), "table" | "index" | "sequence" | "view" | "schema"));
            let table = match object.map(|i| (word(i), i)) {
                Some(("table", i)) => name_at(tokens, skip_noise(tokens, i + 1)).map(|n| n.0),
                _ => None,
            };
            Kind::Ddl { table }
        }
        "comment" | "grant" | "revoke" | "truncate" | "lock" | "vacuum" | "analyze" | "reindex" | "cluster"
        | "refresh" | "security" => {
            let table = find("table").or(find("on")).and_then(|i| name_at(tokens, skip_noise(tokens, i + 1)));
            if word(0) == "truncate" || word(0) == "lock" {
                let at = skip_noise(tokens, if word(1) == "table" { 2 } else { 1 });
                return Kind::Dml { table: name_at(tokens, at).map(|n| n.0) };
            }
            Kind::Ddl { table: table.map(|n| n.0) }
        }
        _ => Kind::Query,
    }
}

/// A refusal: SQLSTATE and message, as DSQL answers.
#[derive(Clone, Debug, PartialEq)]
pub struct Refused {
    pub code: &'static str,
    pub message: String,
}

fn refused(code: &'static str, message: impl Into<String>) -> Option<Refused> {
    Some(Refused { code, message: message.into() })
}

/// What DSQL refuses whatever the session's state. Sources: "Unsupported
/// PostgreSQL features in Aurora DSQL"
/// (https://docs.aws.amazon.com/aurora-dsql/latest/userguide/working-with-postgresql-compatibility-unsupported-features.html)
/// and the seed article for `unsupported statement: Lock`. Messages other
/// than that one follow DSQL's `unsupported statement: <node>` form; their
/// exact wording is not documented.
/// What a stand-in refuses beyond DSQL's documented refusals.
#[derive(Clone, Copy, Debug, Default)]
pub struct Strictness {
    /// ADD IDENTITY on an existing column, as DSQL did in February 2026.
    pub refuse_add_identity: bool,
    /// What AWS's pages do not list for these statements (see [`undocumented`]).
    pub refuse_undocumented: bool,
}

/// What the pages neither list nor refuse, refused as a strict DSQL would:
/// `COMMENT ON` (not in the supported-sql-subsets page), GRANT with a column
/// list or `WITH GRANT OPTION` (the GRANT page shows only `ON table TO role`),
/// and the catalogs and functions the systems-tables page does not list
/// (`pg_policy` is documented as absent; row-level security is unsupported).
fn undocumented(s: &Statement) -> Option<Refused> {
    let w0 = s.word(0);
    if w0 == "comment" {
        return refused("0A000", "unsupported statement: Comment");
    }
    if w0 == "grant" {
        if s.has_phrase(&["with", "grant", "option"]) {
            return refused("0A000", "unsupported GRANT ... WITH GRANT OPTION");
        }
        let before_on = s.tokens.iter().take_while(|t| !matches!(&t.tok, Tok::Word(w) if w == "on"));
        if before_on.into_iter().any(|t| t.tok == Tok::Punct('(')) {
            return refused("0A000", "unsupported GRANT on a column list");
        }
    }
    for t in &s.tokens {
        let Tok::Word(w) = &t.tok else { continue };
        match w.as_str() {
            "pg_policy" | "pg_trigger" | "pg_rewrite" => {
                return refused("42P01", format!("relation \"pg_catalog.{w}\" does not exist"));
            }
            "aclexplode" | "acldefault" => {
                return refused("42883", format!("function pg_catalog.{w} does not exist"));
            }
            _ => {}
        }
    }
    None
}

pub fn refusal(s: &Statement, strictness: Strictness) -> Option<Refused> {
    let w0 = s.word(0);
    let w1 = s.word(1);
    if strictness.refuse_undocumented
        && let Some(r) = undocumented(s)
    {
        return Some(r);
    }
    let refuse_add_identity = strictness.refuse_add_identity;
    let unsupported = |node: &str| refused("0A000", format!("unsupported statement: {node}"));
    match w0 {
        "lock" => return unsupported("Lock"),
        "truncate" => return unsupported("Truncate"),
        "vacuum" => return unsupported("Vacuum"),
        "savepoint" | "release" => return unsupported("Savepoint"),
        "listen" | "notify" => return unsupported("Listen"),
        "declare" => return unsupported("DeclareCursor"),
        _ => {}
    }
    if s.tokens
        .iter()
        .any(|t| matches!(&t.tok, Tok::Word(w) if w.starts_with("pg_advisory") || w.starts_with("pg_try_advisory")))
    {
        return refused("0A000", "advisory locks are not supported");
    }
    if w0 == "set" && s.has_word("lock_timeout") {
        return refused("0A000", "setting configuration parameter \"lock_timeout\" not supported");
    }
    let ddl = matches!(s.kind, Kind::Ddl { .. } | Kind::CreateIndexAsync { .. } | Kind::ValidateAsync { .. });
    if w0 == "create" {
        if s.has_word("temporary") || s.has_word("temp") {
            return refused("0A000", "temporary tables are not supported");
        }
        if s.has_word("trigger") && (w1 == "trigger" || s.word(2) == "trigger" || s.word(3) == "trigger") {
            return unsupported("CreateTrig");
        }
        if s.has_word("extension") {
            return unsupported("CreateExtension");
        }
        if s.has_word("serial") || s.has_word("bigserial") || s.has_word("smallserial") {
            return refused("0A000", "type serial is not supported; use an identity column");
        }
        if w1 == "table" && s.has_word("as") && s.has_word("select") {
            return unsupported("CreateTableAs");
        }
        if s.has_word("partition") || s.has_word("inherits") {
            return refused("0A000", "partitioned and inherited tables are not supported");
        }
        if w1 == "index" || (w1 == "unique" && s.word(2) == "index") {
            if s.has_word("using") {
                return refused("0A000", "index access method cannot be specified");
            }
            if s.has_word("concurrently") {
                return refused("0A000", "CREATE INDEX CONCURRENTLY is not supported; use CREATE INDEX ASYNC");
            }
            // create-index-syntax-support.html: ASYNC is the one form, and its
            // key list takes no ordering.
            if !s.has_word("async") {
                return refused("0A000", "CREATE INDEX without ASYNC is not supported; use CREATE INDEX ASYNC");
            }
            if key_list_words(s).iter().any(|w| *w == "asc" || *w == "desc") {
                return refused("0A000", "ASC and DESC are not supported in CREATE INDEX ASYNC");
            }
        }
    }
    // create-sequence-syntax-support.html: identity columns are BIGINT only
    // (a column declared here; ALTER ... ADD GENERATED is checked against the
    // catalog by the session).
    if w0 == "create" && w1 == "table" {
        let words = s.words();
        for (i, w) in words.iter().enumerate() {
            if *w == "generated" && i > 0 && matches!(words[i - 1], "integer" | "int" | "int4" | "smallint" | "int2") {
                return refused("0A000", "identity columns must be of type bigint");
            }
        }
    }
    // create-sequence-syntax-support.html: identity columns and sequences
    // take CACHE 1 or at least 65536, and say it.
    let identity = s.has_phrase(&["as", "identity"]) || (w0 == "create" && w1 == "sequence");
    if identity && (w0 == "create" || w0 == "alter") {
        match cache_value(s) {
            None => return refused("0A000", "CACHE must be specified for sequences and identity columns"),
            Some(n) if n != 1 && n < 65536 => {
                return refused("22023", format!("CACHE {n} is not supported: use 1 or a value of at least 65536"));
            }
            Some(_) => {}
        }
    }
    if ddl && s.has_word("collate") {
        return refused("0A000", "collations are not supported");
    }
    if w0 == "alter" && w1 == "table" {
        let has = |phrase: &[&str]| s.has_phrase(phrase);
        if refuse_add_identity && has(&["add", "generated"]) {
            return refused("0A000", "unsupported ALTER TABLE ALTER COLUMN ... ADD IDENTITY statement");
        }
        if has(&["set", "not", "null"]) || has(&["type"]) && has(&["alter", "column"]) {
            return refused("0A000", "unsupported ALTER TABLE ALTER COLUMN statement");
        }
        if has(&["primary", "key"]) {
            return refused("0A000", "a primary key can only be declared in CREATE TABLE");
        }
        // alter-table-syntax-support.html: ADD COLUMN takes a name and a type
        // and nothing else; table constraints only as NOT VALID CHECK or
        // FOREIGN KEY (validated later by ALTER TABLE ASYNC ... VALIDATE).
        if let Some(added) = added_column(s)
            && added
                .iter()
                .any(|w| matches!(*w, "default" | "not" | "null" | "unique" | "check" | "references" | "primary"))
        {
            return refused("0A000", "unsupported ALTER TABLE ADD COLUMN with a default or a constraint");
        }
        let table_constraint = has(&["add", "constraint"])
            || has(&["add", "check"])
            || has(&["add", "foreign"])
            || has(&["add", "unique"]);
        if table_constraint && (s.has_word("unique") || s.has_word("exclude")) {
            return refused("0A000", "unsupported ALTER TABLE ADD CONSTRAINT: only CHECK and FOREIGN KEY, NOT VALID");
        }
        if table_constraint && !has(&["not", "valid"]) {
            return refused("0A000", "unsupported ALTER TABLE ADD CONSTRAINT without NOT VALID");
        }
    }
    None
}

/// `ALTER TABLE t ALTER [COLUMN] c ADD GENERATED ...`: the table as written
/// and the column's name, to check the column's type.
pub fn identity_added_to(s: &Statement) -> Option<(String, String)> {
    if !(s.word(0) == "alter" && s.word(1) == "table" && s.has_phrase(&["add", "generated"])) {
        return None;
    }
    let from = skip_noise(&s.tokens, 2);
    let end = name_at(&s.tokens, from)?.1;
    let table = s.sql[s.tokens[from].start..s.tokens[end - 1].end].to_string();
    let mut at = end;
    while at < s.tokens.len() && !matches!(&s.tokens[at].tok, Tok::Word(w) if w == "alter") {
        at += 1;
    }
    at += 1;
    if matches!(s.tokens.get(at).map(|t| &t.tok), Some(Tok::Word(w)) if w == "column") {
        at += 1;
    }
    let column = match &s.tokens.get(at)?.tok {
        Tok::Word(w) | Tok::Quoted(w) => w.clone(),
        _ => return None,
    };
    Some((table, column))
}

/// The unquoted words of the first parenthesized list (an index's keys).
fn key_list_words(s: &Statement) -> Vec<&str> {
    let mut depth = 0;
    let mut words = Vec::new();
    for t in &s.tokens {
        let text = &s.sql[t.start..t.end];
        match (&t.tok, text) {
            (_, "(") => depth += 1,
            (_, ")") => {
                depth -= 1;
                if depth == 0 {
                    break;
                }
            }
            (Tok::Word(w), _) if depth == 1 => words.push(w.as_str()),
            _ => {}
        }
    }
    words
}

/// The number after `CACHE`, if the statement says one.
fn cache_value(s: &Statement) -> Option<i64> {
    let at = s.tokens.iter().position(|t| t.tok == Tok::Word("cache".into()))?;
    let next = s.tokens.get(at + 1)?;
    s.sql[next.start..next.end].parse().ok()
}

/// `ALTER TABLE t ADD [COLUMN] name type ...`: the words after the column's
/// name, when the statement adds a column.
fn added_column(s: &Statement) -> Option<Vec<&str>> {
    let words: Vec<&str> = s
        .tokens
        .iter()
        .map(|t| match &t.tok {
            Tok::Word(w) => w.as_str(),
            _ => "",
        })
        .collect();
    let add = words.iter().position(|w| *w == "add")?;
    let mut at = add + 1;
    if words.get(at) == Some(&"column") {
        at += 1;
    }
    if matches!(
        words.get(at),
        Some(&("constraint" | "check" | "foreign" | "unique" | "primary" | "generated" | "exclude"))
    ) {
        return None;
    }
    // Only `ALTER TABLE ... ADD`: not `ALTER COLUMN ... ADD GENERATED`.
    if words[..add].contains(&"column") {
        return None;
    }
    Some(words[at + 1..].to_vec())
}

/// `CREATE [UNIQUE] INDEX ASYNC i ON t (...)` as the PostgreSQL statement that
/// builds it in the background: `CONCURRENTLY` (the catalog shows btree as btree_index).
pub fn background_build(s: &Statement) -> Option<String> {
    let asynch = s.tokens.iter().find(|t| t.tok == Tok::Word("async".into()))?;
    let on = s.tokens.iter().position(|t| t.tok == Tok::Word("on".into()))?;
    let after_table = name_at(&s.tokens, skip_noise(&s.tokens, on + 1))?.1;
    let open = s.tokens.get(after_table)?;
    let sql = &s.sql;
    Some(format!(
        "{}CONCURRENTLY{}USING btree {}",
        &sql[..asynch.start],
        &sql[asynch.end..open.start],
        &sql[open.start..]
    ))
}

/// The text naming the table after `ON` (`CREATE INDEX ... ON s.t`), as written.
pub fn table_after_on(s: &Statement) -> Option<String> {
    let on = s.tokens.iter().position(|t| t.tok == Tok::Word("on".into()))?;
    let from = skip_noise(&s.tokens, on + 1);
    let end = name_at(&s.tokens, from)?.1;
    Some(s.sql[s.tokens[from].start..s.tokens[end - 1].end].to_string())
}

/// The table an `ALTER TABLE ASYNC` names, as written (perhaps schema-qualified).
pub fn table_after_alter_async(s: &Statement) -> Option<String> {
    let from = skip_noise(&s.tokens, 3);
    let end = name_at(&s.tokens, from)?.1;
    Some(s.sql[s.tokens[from].start..s.tokens[end - 1].end].to_string())
}

/// The index a `DROP INDEX` names (unqualified).
pub fn dropped_index(s: &Statement) -> Option<String> {
    (s.word(0) == "drop" && s.word(1) == "index").then(|| name_at(&s.tokens, skip_noise(&s.tokens, 2)).map(|n| n.0))?
}

/// The statement without its `ASYNC`: what the background job runs.
pub fn synchronous(s: &Statement) -> String {
    match s.tokens.iter().find(|t| matches!(&t.tok, Tok::Word(w) if w == "async")) {
        Some(t) => format!("{}{}", &s.sql[..t.start], &s.sql[t.end..]),
        None => s.sql.clone(),
    }
}

/// Whether the statement is a `CREATE [UNIQUE] INDEX` without ASYNC.
pub fn is_sync_index(s: &Statement) -> bool {
    s.word(0) == "create"
        && (s.word(1) == "index" || (s.word(1) == "unique" && s.word(2) == "index"))
        && !s.has_word("async")
}

/// The statement with `pg_am` and `pg_get_indexdef` read through the
/// stand-in's views of them, which say `btree_index` where DSQL does.
pub fn through_dsql_catalog(sql: &str) -> String {
    let tokens = tokenize(sql);
    let mut out = String::with_capacity(sql.len());
    let mut at = 0;
    for (i, t) in tokens.iter().enumerate() {
        let Tok::Word(w) = &t.tok else { continue };
        if w != "pg_am" && w != "pg_get_indexdef" {
            continue;
        }
        let qualified = i >= 2
            && tokens[i - 1].tok == Tok::Punct('.')
            && matches!(&tokens[i - 2].tok, Tok::Word(q) if q == "pg_catalog");
        if i >= 1 && tokens[i - 1].tok == Tok::Punct('.') && !qualified {
            continue;
        }
        let start = if qualified { tokens[i - 2].start } else { t.start };
        out.push_str(&sql[at..start]);
        out.push_str("dsql_sim.");
        out.push_str(w);
        at = t.end;
    }
    out.push_str(&sql[at..]);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statements_split_outside_quotes_and_comments() {
        let parts = split("SELECT 'a;b'; -- c;\nSELECT \"x;\" FROM t; DO $f$ BEGIN; END $f$;");
        assert_eq!(parts, vec!["SELECT 'a;b'", "-- c;\nSELECT \"x;\" FROM t", "DO $f$ BEGIN; END $f$"]);
        assert_eq!(split(" ; "), Vec::<String>::new());
    }

    #[test]
    fn kinds_and_tables() {
        let k = |sql: &str| Statement::parse(sql).kind;
        assert_eq!(k("BEGIN ISOLATION LEVEL REPEATABLE READ"), Kind::Begin);
        assert_eq!(k("commit"), Kind::Commit);
        assert_eq!(k("INSERT INTO \"public\".\"T x\" SELECT 1"), Kind::Dml { table: Some("T x".into()) });
        assert_eq!(k("UPDATE ONLY public.t SET a = 1"), Kind::Dml { table: Some("t".into()) });
        assert_eq!(k("DELETE FROM t WHERE a"), Kind::Dml { table: Some("t".into()) });
        assert_eq!(
            k("WITH moved AS (INSERT INTO s.n SELECT * FROM s.o RETURNING id) SELECT max(id) FROM moved"),
            Kind::Dml { table: Some("n".into()) }
        );
        assert_eq!(k("WITH x AS (SELECT 1) SELECT * FROM x"), Kind::Query);
        assert_eq!(k("ALTER TABLE IF EXISTS s.\"Old\" RENAME TO b"), Kind::Ddl { table: Some("Old".into()) });
        assert_eq!(k("CREATE TABLE s.t (id bigint)"), Kind::Ddl { table: Some("t".into()) });
        assert_eq!(
            k("CREATE UNIQUE INDEX ASYNC \"i\" ON \"s\".\"t\" (a)"),
            Kind::CreateIndexAsync { name: "i".into(), table: "t".into() }
        );
        assert_eq!(k("CREATE INDEX i ON t (a)"), Kind::Ddl { table: Some("t".into()) });
        assert_eq!(
            k("ALTER TABLE ASYNC \"s\".\"t\" VALIDATE CONSTRAINT \"c\""),
            Kind::ValidateAsync { constraint: "c".into(), table: "t".into() }
        );
        assert_eq!(
            synchronous(&Statement::parse("ALTER TABLE ASYNC t VALIDATE CONSTRAINT c")),
            "ALTER TABLE  t VALIDATE CONSTRAINT c"
        );
        let named = |sql: &str| table_after_alter_async(&Statement::parse(sql));
        assert_eq!(named("ALTER TABLE ASYNC \"s\".\"t\" VALIDATE CONSTRAINT \"c\"").as_deref(), Some("\"s\".\"t\""));
        assert_eq!(named("ALTER TABLE ASYNC IF EXISTS t VALIDATE CONSTRAINT c").as_deref(), Some("t"));
        assert_eq!(k("CALL sys.wait_for_job('x')"), Kind::Call);
        assert_eq!(k("COMMENT ON TABLE s.t IS 'x'"), Kind::Ddl { table: Some("t".into()) });
    }

    #[test]
    fn dsqls_refusals() {
        let r = |sql: &str| refusal(&Statement::parse(sql), Strictness::default()).map(|r| (r.code, r.message));
        assert_eq!(r("LOCK TABLE t IN ACCESS EXCLUSIVE MODE").unwrap().1, "unsupported statement: Lock");
        assert!(r("TRUNCATE t").is_some());
        assert!(r("SELECT pg_try_advisory_lock(1)").is_some());
        assert!(r("CREATE TEMP TABLE x (a int)").is_some());
        assert!(r("CREATE TRIGGER x AFTER INSERT ON t FOR EACH ROW EXECUTE FUNCTION f()").is_some());
        assert!(r("CREATE TABLE t (a text COLLATE \"C\")").is_some());
        assert!(r("SET LOCAL lock_timeout = '1s'").is_some());
        assert!(r("CREATE INDEX i ON t USING btree (a)").is_some());
        assert!(r("SELECT 'LOCK TABLE t', x COLLATE \"C\" FROM t").is_none(), "quoted text and queries pass");
        assert!(r("CREATE INDEX ASYNC i ON t (a)").is_none());
        assert!(r("ALTER TABLE t ALTER COLUMN id ADD GENERATED BY DEFAULT AS IDENTITY (CACHE 65536)").is_none());
        let s = Statement::parse("ALTER TABLE t ALTER COLUMN id ADD GENERATED BY DEFAULT AS IDENTITY (CACHE 65536)");
        let strict = Strictness { refuse_add_identity: true, ..Default::default() };
        assert!(refusal(&s, strict).unwrap().message.contains("ADD IDENTITY"));
    }

    #[test]
    fn what_the_pages_do_not_list_is_refused_only_when_strict() {
        let strict = Strictness { refuse_undocumented: true, ..Default::default() };
        let r = |sql: &str, how| refusal(&Statement::parse(sql), how).map(|r| r.code);
        for (sql, code) in [
            ("COMMENT ON TABLE t IS 'x'", "0A000"),
            ("GRANT SELECT (a, b) ON t TO r", "0A000"),
            ("GRANT SELECT ON t TO r WITH GRANT OPTION", "0A000"),
            ("SELECT tgname FROM pg_catalog.pg_trigger WHERE tgrelid = 1", "42P01"),
            ("SELECT 1 FROM pg_policy", "42P01"),
            ("SELECT 1 FROM pg_catalog.pg_rewrite w", "42P01"),
            ("SELECT * FROM pg_catalog.aclexplode(pg_catalog.acldefault('r', 10))", "42883"),
        ] {
            assert_eq!(r(sql, strict), Some(code), "{sql}");
            assert_eq!(r(sql, Strictness::default()), None, "{sql}");
        }
        assert_eq!(r("GRANT SELECT ON t TO r", strict), None);
        assert_eq!(r("SELECT 'pg_trigger', \"pg_rewrite_x\" FROM t", strict), None, "text and other names pass");
    }

    #[test]
    fn what_the_syntax_pages_refuse() {
        let r = |sql: &str| refusal(&Statement::parse(sql), Strictness::default()).map(|r| r.message);
        // create-index-syntax-support.html
        assert!(r("CREATE INDEX i ON t (a)").unwrap().contains("ASYNC"), "synchronous, even on an empty table");
        assert!(r("CREATE INDEX ASYNC i ON t (a DESC NULLS LAST)").unwrap().contains("DESC"));
        assert!(r("CREATE UNIQUE INDEX ASYNC i ON t (a ASC, b)").is_some());
        assert!(r("CREATE INDEX ASYNC i ON t (a NULLS FIRST) INCLUDE (b) WHERE (c <> 'desc')").is_none());
        // create-sequence-syntax-support.html
        assert!(r("CREATE TABLE t (id bigint GENERATED ALWAYS AS IDENTITY)").unwrap().contains("CACHE"));
        assert!(r("CREATE TABLE t (id bigint GENERATED ALWAYS AS IDENTITY (CACHE 1000))").unwrap().contains("1000"));
        assert!(r("CREATE TABLE t (id bigint GENERATED ALWAYS AS IDENTITY (CACHE 1))").is_none());
        assert!(r("CREATE SEQUENCE s CACHE 65536").is_none());
        assert!(r("CREATE SEQUENCE s").is_some());
        // alter-table-syntax-support.html
        assert!(r("ALTER TABLE t ALTER COLUMN a TYPE bigint").is_some());
        assert!(r("ALTER TABLE t ALTER COLUMN a SET NOT NULL").is_some());
        assert!(r("ALTER TABLE t ADD COLUMN s text DEFAULT 'new'").is_some());
        assert!(r("ALTER TABLE t ADD s text NOT NULL").is_some());
        assert!(r("ALTER TABLE t ADD COLUMN s text").is_none());
        assert!(r("ALTER TABLE t ADD CONSTRAINT c CHECK (a > 0)").is_some());
        assert!(r("ALTER TABLE t ADD CONSTRAINT c CHECK (a > 0) NOT VALID").is_none());
        assert!(r("ALTER TABLE t ADD CONSTRAINT u UNIQUE (a)").is_some());
        assert!(r("ALTER TABLE t ADD PRIMARY KEY (a)").is_some());
        assert!(r("ALTER TABLE t ALTER COLUMN a SET DEFAULT 1").is_none());
        assert!(r("ALTER TABLE t ALTER COLUMN id RESTART WITH 10").is_none());
        assert!(
            r("CREATE TABLE t (id integer GENERATED BY DEFAULT AS IDENTITY (CACHE 1))").unwrap().contains("bigint")
        );
        let added =
            Statement::parse("ALTER TABLE \"s\".\"t\" ALTER COLUMN \"id\" ADD GENERATED ALWAYS AS IDENTITY (CACHE 1)");
        assert_eq!(identity_added_to(&added), Some(("\"s\".\"t\"".into(), "id".into())));
    }

    #[test]
    fn an_async_index_becomes_a_concurrent_build() {
        let s = Statement::parse("CREATE UNIQUE INDEX ASYNC \"i\" ON \"s\".\"t\" (a, lower(b)) INCLUDE (c)");
        assert_eq!(
            background_build(&s).unwrap(),
            "CREATE UNIQUE INDEX CONCURRENTLY \"i\" ON \"s\".\"t\" USING btree (a, lower(b)) INCLUDE (c)"
        );
    }

    #[test]
    fn the_catalog_is_read_through_dsqls_names() {
        assert_eq!(
            through_dsql_catalog("SELECT pg_catalog.pg_get_indexdef(i.oid), a.amname FROM pg_am a, x.pg_am b"),
            "SELECT dsql_sim.pg_get_indexdef(i.oid), a.amname FROM dsql_sim.pg_am a, x.pg_am b"
        );
        assert_eq!(through_dsql_catalog("SELECT 'pg_am'"), "SELECT 'pg_am'");
        let s = Statement::parse("CREATE INDEX i ON ONLY \"s\".\"T\" (a)");
        assert_eq!(table_after_on(&s).as_deref(), Some("\"s\".\"T\""));
        assert_eq!(dropped_index(&Statement::parse("DROP INDEX IF EXISTS s.\"i\"")).as_deref(), Some("i"));
    }

    #[test]
    fn labels_name_the_statement_kind() {
        let l = |sql: &str| Statement::parse(sql).label();
        assert_eq!(l("ALTER TABLE a.b RENAME TO c"), "ALTER TABLE ... RENAME");
        assert_eq!(l("ALTER TABLE a ALTER COLUMN id RESTART WITH 5"), "ALTER TABLE ... RESTART");
        assert_eq!(l("CREATE UNIQUE INDEX ASYNC i ON t (a)"), "CREATE INDEX ASYNC");
        assert_eq!(l("INSERT INTO t SELECT 1 ON CONFLICT DO NOTHING"), "INSERT ... ON CONFLICT");
        assert_eq!(l("WITH m AS (INSERT INTO t SELECT 1 RETURNING id) SELECT 1"), "WITH ... INSERT");
    }
}
