//! What each statement does, read from its parse tree, whatever the target:
//! transaction control, an index, the parts of an ALTER TABLE (each plain,
//! a constraint to add NOT VALID and validate, or a change for the table
//! engine), a DML backfill, other DDL; and what DSQL refuses of it. The
//! target's rules ([`super::rules`]) decide what is sent. Pure.

use pg_query::NodeEnum;
use pg_query::protobuf::{
    AlterTableCmd, AlterTableStmt, AlterTableType, ColumnDef, ConstrType, Constraint, Node, ObjectType, RangeVar,
    TransactionStmtKind,
};

use super::backfill::{InsertSource, insert_source};
use super::sql::{expr_text, statement_text, table_of, type_text};
use crate::api::Generation;
use crate::api::changes::{AddColumn, AddConstraint, AddIdentity, AlterColumn, Change, DropColumn, SetPrimaryKey};
use crate::engine::plan::quote::ident;
use crate::engine::plan::shape::TableName;

#[derive(Clone, Debug, PartialEq)]
pub enum What {
    Begin,
    Commit,
    Rollback,
    /// SAVEPOINT, PREPARE TRANSACTION and the like.
    OtherTransaction(String),
    CreateIndex(IndexFacts),
    Alter {
        table: TableName,
        parts: Vec<AlterPart>,
    },
    Dml(DmlFacts),
    Ddl(DdlFacts),
    /// A SELECT: run as it is.
    Query,
}

#[derive(Clone, Debug, PartialEq)]
pub struct IndexFacts {
    pub table: TableName,
    /// The index, in the table's schema.
    pub index: TableName,
    pub unique: bool,
    pub concurrently: bool,
    /// The access method (`btree`, `gin` ...).
    pub method: String,
    /// `CREATE INDEX` without `CONCURRENTLY` or `ASYNC`, deparsed.
    pub plain_sql: String,
}

#[derive(Clone, Debug, PartialEq)]
pub enum AlterPart {
    /// Sent alone as `ALTER TABLE t <subcommand>`; `as_change` is the same
    /// as a table engine change, used when it sits among such changes (one
    /// rebuild makes them all).
    Plain { sql: String, destructive: bool, as_change: Option<Change> },
    /// A CHECK or FOREIGN KEY: added NOT VALID, then validated (unless the
    /// file said NOT VALID itself).
    Constraint { name: String, add_not_valid: String, validate: bool },
    /// `VALIDATE CONSTRAINT name`.
    Validate { name: String },
    /// A change the table engine makes: in place where the server can
    /// without a long lock, else in the rebuild.
    Change(Change),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DmlKind {
    Update,
    Delete,
    InsertSelect,
    InsertValues,
    Merge,
}

#[derive(Clone, Debug, PartialEq)]
pub struct DmlFacts {
    pub kind: DmlKind,
    pub table: TableName,
    pub has_where: bool,
    /// An `INSERT ... SELECT` that key ranges of the table it reads can batch.
    pub source: Option<InsertSource>,
}

#[derive(Clone, Debug, PartialEq)]
pub struct DdlFacts {
    /// `CREATE TABLE`, `DROP TABLE`, `COMMENT` ...
    pub what: String,
    pub destructive: bool,
    /// What DSQL refuses of it, if anything.
    pub dsql_refuses: Option<Refusal>,
    /// What the catalog shows once the statement committed (for a reply lost).
    pub creates: Option<TableName>,
}

/// A rule of the target that a statement breaks, with where it is documented.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Refusal {
    pub rule: &'static str,
    pub page: &'static str,
}

const UNSUPPORTED: &str = "https://docs.aws.amazon.com/aurora-dsql/latest/userguide/working-with-postgresql-compatibility-unsupported-features.html";
const SEQUENCES: &str = "https://docs.aws.amazon.com/aurora-dsql/latest/userguide/sequences-identity-columns.html";

/// What `tree` does; `Err` names what cannot be read into a table change.
pub fn classify(tree: &NodeEnum) -> Result<What, String> {
    Ok(match tree {
        NodeEnum::TransactionStmt(t) => match t.kind() {
            TransactionStmtKind::TransStmtBegin | TransactionStmtKind::TransStmtStart => What::Begin,
            TransactionStmtKind::TransStmtCommit => What::Commit,
            TransactionStmtKind::TransStmtRollback => What::Rollback,
            other => What::OtherTransaction(format!("{other:?}")),
        },
        NodeEnum::IndexStmt(i) => {
            let table = table_of(i.relation.as_ref());
            let mut plain = i.clone();
            plain.concurrent = false;
            // B-tree is the default: said only when it is another method.
            if plain.access_method == "btree" {
                plain.access_method.clear();
            }
            What::CreateIndex(IndexFacts {
                index: table.sibling(i.idxname.clone()),
                table,
                unique: i.unique,
                concurrently: i.concurrent,
                method: i.access_method.clone(),
                plain_sql: statement_text(&NodeEnum::IndexStmt(plain)),
            })
        }
        NodeEnum::AlterTableStmt(a) if a.objtype() == ObjectType::ObjectTable => alter(a)?,
        NodeEnum::UpdateStmt(u) => dml(DmlKind::Update, u.relation.as_ref(), u.where_clause.is_some()),
        NodeEnum::DeleteStmt(d) => dml(DmlKind::Delete, d.relation.as_ref(), d.where_clause.is_some()),
        NodeEnum::InsertStmt(i) => {
            let values = i
                .select_stmt
                .as_ref()
                .and_then(|s| s.node.as_ref())
                .is_some_and(|s| matches!(s, NodeEnum::SelectStmt(sel) if !sel.values_lists.is_empty()));
            let kind = if values { DmlKind::InsertValues } else { DmlKind::InsertSelect };
            let source = if values { None } else { insert_source(i) };
            What::Dml(DmlFacts { source, ..dml_facts(kind, i.relation.as_ref(), false) })
        }
        NodeEnum::MergeStmt(m) => dml(DmlKind::Merge, m.relation.as_ref(), true),
        NodeEnum::SelectStmt(s) if s.into_clause.is_none() => match advisory_lock(tree) {
            true => What::Ddl(ddl("SELECT", false, Some(advisory()), None)),
            false => What::Query,
        },
        other => What::Ddl(other_ddl(other)),
    })
}

fn dml(kind: DmlKind, relation: Option<&RangeVar>, has_where: bool) -> What {
    What::Dml(dml_facts(kind, relation, has_where))
}

fn dml_facts(kind: DmlKind, relation: Option<&RangeVar>, has_where: bool) -> DmlFacts {
    DmlFacts { kind, table: table_of(relation), has_where, source: None }
}

fn ddl(what: &str, destructive: bool, dsql_refuses: Option<Refusal>, creates: Option<TableName>) -> DdlFacts {
    DdlFacts { what: what.to_string(), destructive, dsql_refuses, creates }
}

fn advisory() -> Refusal {
    Refusal {
        rule: "advisory locks do not exist on DSQL (the runner's claim row keeps runners apart)",
        page: UNSUPPORTED,
    }
}

fn other_ddl(tree: &NodeEnum) -> DdlFacts {
    let refuse = |rule| Some(Refusal { rule, page: UNSUPPORTED });
    match tree {
        NodeEnum::CreateStmt(c) => {
            let table = table_of(c.relation.as_ref());
            let temp = c.relation.as_ref().is_some_and(|r| r.relpersistence == "t");
            let serial = c.table_elts.iter().any(|e| matches!(&e.node, Some(NodeEnum::ColumnDef(d)) if is_serial(d)));
            let refusal = if temp {
                refuse("temporary tables are not supported on DSQL")
            } else if serial {
                Some(Refusal {
                    rule: "SERIAL needs a sequence without CACHE, which DSQL refuses: use GENERATED BY DEFAULT AS IDENTITY (CACHE 65536)",
                    page: SEQUENCES,
                })
            } else {
                None
            };
            ddl("CREATE TABLE", false, refusal, Some(table))
        }
        NodeEnum::CreateTrigStmt(_) => ddl("CREATE TRIGGER", false, refuse("triggers are not supported on DSQL"), None),
        NodeEnum::CreateExtensionStmt(_) => {
            ddl("CREATE EXTENSION", false, refuse("extensions are not supported on DSQL"), None)
        }
        NodeEnum::TruncateStmt(_) => ddl("TRUNCATE", true, refuse("TRUNCATE is not supported on DSQL"), None),
        NodeEnum::LockStmt(_) => ddl("LOCK", false, refuse("LOCK TABLE is not supported on DSQL"), None),
        NodeEnum::CreateSeqStmt(s) => {
            let cached =
                s.options.iter().any(|o| matches!(&o.node, Some(NodeEnum::DefElem(d)) if d.defname == "cache"));
            let refusal = (!cached).then_some(Refusal {
                rule: "a sequence needs an explicit CACHE on DSQL (1 or at least 65536)",
                page: SEQUENCES,
            });
            ddl("CREATE SEQUENCE", false, refusal, Some(table_of(s.sequence.as_ref())))
        }
        NodeEnum::DropStmt(d) => {
            let destructive = matches!(d.remove_type(), ObjectType::ObjectTable | ObjectType::ObjectSchema);
            ddl(&format!("DROP {}", object_word(d.remove_type())), destructive, None, None)
        }
        NodeEnum::ViewStmt(v) => ddl("CREATE VIEW", false, None, Some(table_of(v.view.as_ref()))),
        NodeEnum::RenameStmt(_) => ddl("RENAME", false, None, None),
        NodeEnum::CommentStmt(_) => ddl("COMMENT", false, None, None),
        NodeEnum::GrantStmt(_) => ddl("GRANT", false, None, None),
        NodeEnum::CreateFunctionStmt(_) => ddl("CREATE FUNCTION", false, None, None),
        NodeEnum::CreateSchemaStmt(_) => ddl("CREATE SCHEMA", false, None, None),
        NodeEnum::DoStmt(_) => ddl("DO", false, refuse("anonymous code blocks (DO) are not supported on DSQL"), None),
        other if advisory_lock(other) => ddl("statement", false, Some(advisory()), None),
        other => ddl(&variant_name(other), false, None, None),
    }
}

/// `CreateFunctionStmt` and the like: the node's kind, from its Debug form.
fn variant_name(tree: &NodeEnum) -> String {
    let debug = format!("{tree:?}");
    debug.split(['(', ' ']).next().unwrap_or("statement").to_string()
}

fn object_word(t: ObjectType) -> String {
    format!("{t:?}").trim_start_matches("Object").to_ascii_uppercase()
}

/// Whether a statement calls `pg_advisory_lock` and its kin anywhere.
fn advisory_lock(tree: &NodeEnum) -> bool {
    let text = statement_text(tree).to_ascii_lowercase();
    text.contains("pg_advisory_") || text.contains("pg_try_advisory_")
}

fn is_serial(def: &ColumnDef) -> bool {
    let name = def.type_name.as_ref().and_then(|t| t.names.last()).and_then(|n| match &n.node {
        Some(NodeEnum::String(s)) => Some(s.sval.to_ascii_lowercase()),
        _ => None,
    });
    matches!(name.as_deref(), Some("serial" | "bigserial" | "smallserial" | "serial2" | "serial4" | "serial8"))
}

fn alter(a: &AlterTableStmt) -> Result<What, String> {
    let table = table_of(a.relation.as_ref());
    let mut parts = Vec::new();
    for cmd in a.cmds.iter().filter_map(|c| match &c.node {
        Some(NodeEnum::AlterTableCmd(cmd)) => Some(cmd),
        _ => None,
    }) {
        parts.extend(alter_part(a, cmd, &table)?);
    }
    Ok(What::Alter { table, parts })
}

/// `ALTER TABLE <table> <cmd>` alone, deparsed.
fn alone(a: &AlterTableStmt, cmd: &AlterTableCmd) -> String {
    let mut one = a.clone();
    one.cmds = vec![Node { node: Some(NodeEnum::AlterTableCmd(Box::new(cmd.clone()))) }];
    statement_text(&NodeEnum::AlterTableStmt(one))
}

fn change(f: impl FnOnce(&mut Change)) -> AlterPart {
    let mut c = Change::default();
    f(&mut c);
    AlterPart::Change(c)
}

fn alter_part(a: &AlterTableStmt, cmd: &AlterTableCmd, table: &TableName) -> Result<Vec<AlterPart>, String> {
    let def = cmd.def.as_ref().and_then(|d| d.node.as_ref());
    let plain = |as_change: Option<Change>| AlterPart::Plain { sql: alone(a, cmd), destructive: false, as_change };
    let column_change = |f: &dyn Fn(&mut AlterColumn)| {
        let mut alter = AlterColumn { column: cmd.name.clone(), ..Default::default() };
        f(&mut alter);
        Some(Change { alter_column: Some(alter), ..Default::default() })
    };
    Ok(match (cmd.subtype(), def) {
        (AlterTableType::AtAlterColumnType, Some(NodeEnum::ColumnDef(d))) => {
            let mut data_type = d.type_name.as_ref().map(type_text).unwrap_or_default();
            if let Some(collate) = &d.coll_clause {
                let names: Vec<String> = collate.collname.iter().filter_map(string_of).collect();
                data_type =
                    format!("{data_type} COLLATE {}", names.iter().map(|n| ident(n)).collect::<Vec<_>>().join("."));
            }
            let using = d.raw_default.as_ref().map(|e| expr_text(e));
            vec![change(|c| {
                c.alter_column = Some(AlterColumn {
                    column: cmd.name.clone(),
                    data_type: Some(data_type),
                    using,
                    ..Default::default()
                })
            })]
        }
        (AlterTableType::AtSetNotNull, _) => vec![change(|c| {
            c.alter_column = Some(AlterColumn { column: cmd.name.clone(), not_null: Some(true), ..Default::default() })
        })],
        (AlterTableType::AtAddColumn, Some(NodeEnum::ColumnDef(d))) => add_column(a, cmd, d, table)?,
        (AlterTableType::AtDropColumn, _) => vec![AlterPart::Plain {
            sql: alone(a, cmd),
            destructive: true,
            as_change: Some(Change { drop_column: Some(DropColumn { name: cmd.name.clone() }), ..Default::default() }),
        }],
        (AlterTableType::AtColumnDefault, Some(expr)) => {
            let default = expr_text(&Node { node: Some(expr.clone()) });
            vec![plain(column_change(&|c| c.default = Some(default.clone())))]
        }
        (AlterTableType::AtColumnDefault, None) => vec![plain(column_change(&|c| c.drop_default = true))],
        (AlterTableType::AtDropNotNull, _) => vec![plain(column_change(&|c| c.not_null = Some(false)))],
        (AlterTableType::AtAddConstraint, Some(NodeEnum::Constraint(c))) => vec![add_constraint(a, c, table, &[])?],
        (AlterTableType::AtValidateConstraint, _) => vec![AlterPart::Validate { name: cmd.name.clone() }],
        (AlterTableType::AtAddIdentity, Some(NodeEnum::Constraint(c))) => {
            let generation = if c.generated_when == "a" { Generation::Always } else { Generation::ByDefault };
            vec![change(|ch| {
                ch.add_identity = Some(AddIdentity { column: cmd.name.clone(), generation, ..Default::default() })
            })]
        }
        _ => vec![plain(None)],
    })
}

fn add_column(
    a: &AlterTableStmt,
    cmd: &AlterTableCmd,
    d: &ColumnDef,
    table: &TableName,
) -> Result<Vec<AlterPart>, String> {
    let constraints: Vec<&Constraint> = d
        .constraints
        .iter()
        .filter_map(|c| match &c.node {
            Some(NodeEnum::Constraint(c)) => Some(c.as_ref()),
            _ => None,
        })
        .filter(|c| c.contype() != ConstrType::ConstrNull)
        .collect();
    if constraints.is_empty() && !is_serial(d) && d.coll_clause.is_none() {
        let data_type = d.type_name.as_ref().map(type_text).unwrap_or_default();
        let added = AddColumn { name: d.colname.clone(), data_type, not_null: false, default: None };
        return Ok(vec![AlterPart::Plain {
            sql: alone(a, cmd),
            destructive: false,
            as_change: Some(Change { add_column: Some(added), ..Default::default() }),
        }]);
    }
    if is_serial(d) {
        return Err(format!(
            "column {} is SERIAL: say GENERATED BY DEFAULT AS IDENTITY instead (the table engine adds identity to an existing column)",
            d.colname
        ));
    }
    let mut column = AddColumn {
        name: d.colname.clone(),
        data_type: d.type_name.as_ref().map(type_text).unwrap_or_default(),
        not_null: false,
        default: None,
    };
    let mut after = Vec::new();
    for c in constraints {
        match c.contype() {
            ConstrType::ConstrNotnull => column.not_null = true,
            ConstrType::ConstrDefault => column.default = c.raw_expr.as_ref().map(|e| expr_text(e)),
            ConstrType::ConstrIdentity => {
                let generation = if c.generated_when == "a" { Generation::Always } else { Generation::ByDefault };
                after.push(change(|ch| {
                    ch.add_identity = Some(AddIdentity { column: d.colname.clone(), generation, ..Default::default() })
                }));
            }
            ConstrType::ConstrGenerated => {
                return Err(format!(
                    "column {}: adding a generated column is not a table change the engine makes",
                    d.colname
                ));
            }
            _ => after.push(add_constraint(a, c, table, std::slice::from_ref(&d.colname))?),
        }
    }
    let mut parts = vec![change(|ch| ch.add_column = Some(column))];
    parts.extend(after);
    Ok(parts)
}

/// A table constraint (or a column's, `columns` naming it).
fn add_constraint(
    a: &AlterTableStmt,
    c: &Constraint,
    table: &TableName,
    columns: &[String],
) -> Result<AlterPart, String> {
    let keys = |nodes: &[Node]| -> Vec<String> {
        let named: Vec<String> = nodes.iter().filter_map(string_of).collect();
        if named.is_empty() { columns.to_vec() } else { named }
    };
    let name = |suffix: &str, cols: &[String]| -> String {
        if !c.conname.is_empty() {
            return c.conname.clone();
        }
        let mut parts = vec![table.name.clone()];
        parts.extend(cols.iter().cloned());
        parts.push(suffix.into());
        parts.join("_")
    };
    Ok(match c.contype() {
        ConstrType::ConstrCheck | ConstrType::ConstrForeign => {
            let (suffix, cols) = match c.contype() {
                ConstrType::ConstrCheck => ("check", check_columns(c, columns)),
                _ => ("fkey", keys(&c.fk_attrs)),
            };
            let name = name(suffix, &cols);
            let mut named = c.clone();
            named.conname = name.clone();
            named.skip_validation = true;
            named.initially_valid = false;
            if named.contype() == ConstrType::ConstrForeign && named.fk_attrs.is_empty() {
                named.fk_attrs = cols.iter().map(|n| string_node(n)).collect();
            }
            // Every enum field set: libpg_query's deparser aborts the process on an undefined one.
            let cmd = AlterTableCmd {
                subtype: AlterTableType::AtAddConstraint as i32,
                behavior: pg_query::protobuf::DropBehavior::DropRestrict as i32,
                def: Some(Box::new(Node { node: Some(NodeEnum::Constraint(Box::new(named))) })),
                ..Default::default()
            };
            AlterPart::Constraint { name, add_not_valid: alone(a, &cmd), validate: !c.skip_validation }
        }
        ConstrType::ConstrUnique => {
            let cols = keys(&c.keys);
            let name = name("key", &cols);
            change(|ch| ch.add_constraint = Some(AddConstraint { name, unique: Some(cols), ..Default::default() }))
        }
        ConstrType::ConstrPrimary => {
            let cols = keys(&c.keys);
            change(|ch| ch.set_primary_key = Some(SetPrimaryKey { columns: cols }))
        }
        other => return Err(format!("a {other:?} constraint is not a table change the engine makes")),
    })
}

/// A CHECK's name part as PostgreSQL chooses it: the first column it reads.
fn check_columns(c: &Constraint, columns: &[String]) -> Vec<String> {
    if !columns.is_empty() {
        return columns.to_vec();
    }
    use crate::engine::plan::lexer::{Token, pieces};
    let text = c.raw_expr.as_ref().map(|e| expr_text(e)).unwrap_or_default();
    let words = pieces(&text).unwrap_or_default();
    let not_a_column = ["and", "or", "not", "is", "null", "true", "false", "in", "between", "like", "any", "all"];
    let first = words.iter().enumerate().find_map(|(i, p)| {
        let word = &text[p.at.clone()];
        let called = words.get(i + 1).is_some_and(|n| n.token == Token::Open);
        let column = match p.token {
            Token::QuotedName => !called,
            Token::Word => {
                !called
                    && !not_a_column.contains(&word.to_ascii_lowercase().as_str())
                    && !word.starts_with(|c: char| c.is_ascii_digit())
            }
            _ => false,
        };
        column.then(|| word.trim_matches('"').to_string())
    });
    first.into_iter().collect()
}

fn string_of(n: &Node) -> Option<String> {
    match &n.node {
        Some(NodeEnum::String(s)) => Some(s.sval.clone()),
        _ => None,
    }
}

fn string_node(s: &str) -> Node {
    Node { node: Some(NodeEnum::String(pg_query::protobuf::String { sval: s.to_string() })) }
}

#[cfg(test)]
mod tests;
