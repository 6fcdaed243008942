//! A TableMigration's changes, planned: the table's shape after each change,
//! where every column of the new table comes from, and per change whether
//! the server makes it in place or the one rebuild does ([`ways`]). Pure.
//!
//! The rebuild is the identity migration's engine with another target: a
//! shadow table in the new shape, filled by a copy whose SELECT is the old row
//! put through each change in turn ([`Rebuild::select`]). Identity is one
//! change among the others.

pub mod carry;
pub mod rebind;
pub mod rehearsal;
pub mod render;
pub mod reshape;
pub mod reverse;
pub mod scan;
pub mod spec_text;
pub mod stages;
pub mod types;
pub mod undo;
pub mod ways;

use super::shape::{Column, ConstraintKind, OutgoingForeignKey, TableShape, is_integer_type};
use super::validate::{InvalidInput, Problem};
use crate::api::changes::{AddIdentity, Change, ChangeKind, ForeignKey};
use types::{always_converts, assignment_cast, normalize_type};

/// The table as the changes so far leave it.
#[derive(Clone, Debug, PartialEq, Default)]
pub struct State {
    pub columns: Vec<Column>,
    pub primary_key: Vec<String>,
    /// The primary key constraint's name, as the catalog has it; None for
    /// one a change adds (`<table>_pkey`, as ALTER TABLE names it).
    pub primary_key_name: Option<String>,
    /// Named CHECK constraints: `(name, definition)`, as `CHECK (expr)`.
    pub checks: Vec<(String, String)>,
    /// Named UNIQUE constraints: `(name, columns)`.
    pub uniques: Vec<(String, Vec<String>)>,
    pub foreign_keys: Vec<(String, ForeignKey)>,
    /// The table's own foreign keys to other tables, carried by name and
    /// definition (actions included), through renames and drops.
    pub carried_foreign_keys: Vec<OutgoingForeignKey>,
    pub identity: Option<AddIdentity>,
    /// Every constraint and index name in use, to refuse a clash by name.
    pub names: Vec<String>,
    /// The table's indexes (not a constraint's): name and definition.
    pub indexes: Vec<(String, String)>,
    /// Defaults the changes set, each with its column's type then: ALTER
    /// TABLE keeps a default typed as it was set through a later new type.
    pub set_defaults: Vec<(String, String)>,
}

impl State {
    /// The table as the catalog describes it.
    pub fn of(shape: &TableShape) -> Self {
        let mut state = Self { columns: shape.columns.clone(), ..Default::default() };
        for c in &shape.constraints {
            state.names.push(c.name.clone());
            match c.kind {
                ConstraintKind::PrimaryKey => {
                    state.primary_key = c.columns.clone();
                    state.primary_key_name = Some(c.name.clone());
                }
                ConstraintKind::Unique => state.uniques.push((c.name.clone(), c.columns.clone())),
                ConstraintKind::Check => state.checks.push((c.name.clone(), c.definition.clone())),
            }
        }
        state.carried_foreign_keys = shape.outgoing_foreign_keys.clone();
        state.names.extend(shape.outgoing_foreign_keys.iter().map(|f| f.name.clone()));
        state.names.extend(shape.indexes.iter().map(|i| i.name.clone()));
        state.indexes = shape.indexes.iter().map(|i| (i.name.clone(), i.definition.clone())).collect();
        // An identity the table has already is the new table's too.
        state.identity = shape.columns.iter().find(|c| c.identity.is_some()).map(|c| AddIdentity {
            column: c.name.clone(),
            generation: match c.identity {
                Some('a') => crate::api::Generation::Always,
                _ => crate::api::Generation::ByDefault,
            },
            cache: None,
            start_after: None,
        });
        state
    }

    pub fn column(&self, name: &str) -> Option<&Column> {
        self.columns.iter().find(|c| c.name == name)
    }

    fn column_mut(&mut self, name: &str) -> Option<&mut Column> {
        self.columns.iter_mut().find(|c| c.name == name)
    }
}

/// One step of the copy's SELECT: each output column and its expression over
/// the previous step's columns (the source row for the first).
pub type Layer = Vec<(String, String)>;

/// What the data must satisfy for the new shape, checked by a read-only scan
/// before anything changes.
#[derive(Clone, Debug, PartialEq)]
pub enum DataCheck {
    /// `expression` (over the row as of that change) gives a value of
    /// `data_type`, converted by assignment as ALTER COLUMN ... TYPE does: a
    /// value that does not fit raises.
    Converts {
        column: String,
        expression: String,
        data_type: String,
    },
    NotNull {
        column: String,
    },
    Unique {
        columns: Vec<String>,
    },
    Check {
        name: String,
        expression: String,
    },
    References {
        name: String,
        key: ForeignKey,
    },
}

/// A change applied to the state: what it needs of the data, and the copy
/// layer it adds (None when no value or name changes).
struct Applied {
    checks: Vec<DataCheck>,
    layer: Option<Layer>,
}

/// Applies one change to `state`, or says what is wrong with it. `field` is
/// where it sits in the spec (`spec.changes[2].alterColumn`).
pub fn apply(state: &mut State, change: &Change, index: usize) -> Result<Vec<DataCheck>, Problem> {
    apply_layered(state, change, index).map(|a| a.checks)
}

fn apply_layered(state: &mut State, change: &Change, index: usize) -> Result<Applied, Problem> {
    let kind = change.kind().map_err(|keys| {
        let field = format!("spec.changes[{index}]");
        match keys.as_slice() {
            [] => Problem::new(field, "names no change: set one of alterColumn, addColumn, dropColumn, renameColumn, setPrimaryKey, addConstraint, addIdentity"),
            keys => Problem::new(field, format!("sets {}; each item makes one change", keys.join(" and "))),
        }
    })?;
    // Spec text is data: one expression or type each, before anything reads it.
    for text in spec_text::texts_of(change, index) {
        text.check().map_err(|why| Problem::new(text.field.clone(), why))?;
    }
    let field = format!("spec.changes[{index}].{}", kind.key());
    let bad = |sub: &str, message: String| Problem::new(format!("{field}.{sub}"), message);
    let keep_all = |state: &State| -> Layer {
        state.columns.iter().map(|c| (c.name.clone(), super::quote::ident(&c.name))).collect()
    };
    let mut checks = Vec::new();
    let mut layer = None;
    match kind {
        ChangeKind::AlterColumn(a) => {
            if state.column(&a.column).is_none() {
                return Err(bad("column", format!("column {:?} does not exist", a.column)));
            }
            if a.using.is_some() && a.data_type.is_none() {
                return Err(bad("using", "a using expression needs a type".into()));
            }
            if a.data_type.is_none() && a.not_null.is_none() && a.default.is_none() && !a.drop_default {
                return Err(bad("column", "changes nothing: set type, notNull, default or dropDefault".into()));
            }
            if a.default.is_some() && a.drop_default {
                return Err(bad("dropDefault", "both default and dropDefault are set".into()));
            }
            let quoted = super::quote::ident(&a.column);
            if let (Some(_), Some(user)) = (&a.data_type, generated_reading(state, &a.column)) {
                return Err(bad(
                    "type",
                    format!(
                        "{:?} is used by the generated column {user:?}; ALTER TABLE refuses a new type for it",
                        a.column
                    ),
                ));
            }
            if let Some(data_type) = &a.data_type {
                let data_type = normalize_type(data_type);
                let value = match &a.using {
                    Some(using) => format!("({using})"),
                    None => quoted.clone(),
                };
                // By assignment, as ALTER COLUMN ... TYPE converts: a value
                // that does not fit raises, never cut.
                let expression = assignment_cast(&value, &data_type);
                // A conversion no value can fail needs no pass over the rows.
                let from = state.column(&a.column).map(|c| normalize_type(&c.data_type)).unwrap_or_default();
                if a.using.is_some() || !always_converts(&from, &data_type) {
                    checks.push(DataCheck::Converts {
                        column: a.column.clone(),
                        expression: expression.clone(),
                        data_type: data_type.clone(),
                    });
                }
                let mut l = keep_all(state);
                for (name, expr) in &mut l {
                    if *name == a.column {
                        expr.clone_from(&expression);
                    }
                }
                layer = Some(l);
                // The default stays, as ALTER COLUMN ... TYPE keeps it (typed as
                // when it was set): the new table's CREATE refuses one that does
                // not fit, before any row moves.
                if let Some(at) = state.set_defaults.iter().position(|(c, _)| *c == a.column) {
                    let (_, typed) = state.set_defaults.remove(at);
                    let column = state.column_mut(&a.column).expect("checked above");
                    // A quoted literal took the column's type when it was set
                    // (`'none'` on text is `'none'::text`); anything else has a
                    // type of its own, which the new type coerces silently.
                    if let Some(default) =
                        column.default.as_mut().filter(|d| d.trim_start_matches('(').starts_with('\''))
                    {
                        *default = format!("({default})::{}", without_modifiers(&typed));
                    }
                }
                let column = state.column_mut(&a.column).expect("checked above");
                column.data_type = data_type;
                // A new type takes its own default collation, as ALTER COLUMN ... TYPE gives it.
                column.collation = None;
            }
            if a.not_null == Some(false) && state.primary_key.contains(&a.column) {
                return Err(bad(
                    "notNull",
                    format!("{:?} is in the primary key, which ALTER TABLE keeps NOT NULL", a.column),
                ));
            }
            let c = state.column_mut(&a.column).expect("checked above");
            if let Some(not_null) = a.not_null {
                if not_null && !c.not_null {
                    checks.push(DataCheck::NotNull { column: a.column.clone() });
                }
                c.not_null = not_null;
            }
            if let Some(default) = &a.default {
                c.default = Some(default.clone());
            }
            if a.drop_default {
                c.default = None;
            }
            let typed = c.data_type.clone();
            state.set_defaults.retain(|(c, _)| *c != a.column);
            if a.default.is_some() {
                state.set_defaults.push((a.column.clone(), typed));
            }
        }
        ChangeKind::AddColumn(a) => {
            if state.column(&a.name).is_some() {
                return Err(bad("name", format!("column {:?} already exists", a.name)));
            }
            if a.data_type.trim().is_empty() {
                return Err(bad("type", "must not be empty".into()));
            }
            if a.not_null && a.default.is_none() {
                return Err(bad(
                    "notNull",
                    "a NOT NULL column needs a default: the existing rows would have none".into(),
                ));
            }
            let data_type = normalize_type(&a.data_type);
            let value = a.default.clone().map_or("NULL".to_string(), |d| format!("({d})"));
            let mut l = keep_all(state);
            l.push((a.name.clone(), assignment_cast(&value, &data_type)));
            layer = Some(l);
            if a.default.is_some() {
                state.set_defaults.push((a.name.clone(), data_type.clone()));
            }
            state.columns.push(Column {
                name: a.name.clone(),
                data_type,
                not_null: a.not_null,
                default: a.default.clone(),
                generated: None,
                identity: None,
                collation: None,
            });
        }
        ChangeKind::DropColumn(d) => {
            if state.column(&d.name).is_none() {
                return Err(bad("name", format!("column {:?} does not exist", d.name)));
            }
            if state.primary_key.contains(&d.name) {
                return Err(bad(
                    "name",
                    format!("column {:?} is in the primary key: set another primary key first", d.name),
                ));
            }
            if state.identity.as_ref().is_some_and(|i| i.column == d.name) {
                return Err(bad("name", format!("column {:?} gets the identity in an earlier change", d.name)));
            }
            if let Some(user) = generated_reading(state, &d.name) {
                return Err(bad(
                    "name",
                    format!("{:?} is used by the generated column {user:?}; ALTER TABLE refuses to drop it", d.name),
                ));
            }
            state.columns.retain(|c| c.name != d.name);
            state.set_defaults.retain(|(c, _)| *c != d.name);
            // As ALTER TABLE drops them with the column.
            state.checks.retain(|(_, definition)| !rebind::reads_column(definition, &d.name));
            state.indexes.retain(|(_, definition)| !rebind::reads_column(definition, &d.name));
            state.uniques.retain(|(_, cols)| !cols.contains(&d.name));
            state.foreign_keys.retain(|(_, fk)| !fk.columns.contains(&d.name));
            state.carried_foreign_keys.retain(|fk| !fk.columns.contains(&d.name));
            layer = Some(keep_all(state));
        }
        ChangeKind::RenameColumn(r) => {
            if state.column(&r.from).is_none() {
                return Err(bad("from", format!("column {:?} does not exist", r.from)));
            }
            if state.column(&r.to).is_some() {
                return Err(bad("to", format!("column {:?} already exists", r.to)));
            }
            if r.to.trim().is_empty() {
                return Err(bad("to", "must not be empty".into()));
            }
            let mut l = keep_all(state);
            for (name, _) in &mut l {
                if *name == r.from {
                    name.clone_from(&r.to);
                }
            }
            layer = Some(l);
            let rename =
                |cols: &mut Vec<String>| cols.iter_mut().filter(|c| **c == r.from).for_each(|c| c.clone_from(&r.to));
            state.column_mut(&r.from).expect("checked above").name.clone_from(&r.to);
            // A CHECK, an index or a generated column stays bound to its
            // columns, as ALTER TABLE keeps it.
            let renamed = [(r.from.clone(), r.to.clone())];
            let generated = state.columns.iter_mut().filter_map(|c| c.generated.as_mut());
            for definition in
                state.checks.iter_mut().map(|(_, d)| d).chain(state.indexes.iter_mut().map(|(_, d)| d)).chain(generated)
            {
                if let Some(rebound) = rebind::rename_columns(definition, &renamed) {
                    *definition = rebound;
                }
            }
            rename(&mut state.primary_key);
            state.set_defaults.iter_mut().filter(|(c, _)| *c == r.from).for_each(|(c, _)| c.clone_from(&r.to));
            state.uniques.iter_mut().for_each(|(_, cols)| rename(cols));
            state.foreign_keys.iter_mut().for_each(|(_, fk)| rename(&mut fk.columns));
            let to_new = |c: &str| if c == r.from { r.to.clone() } else { c.to_string() };
            state.carried_foreign_keys = state.carried_foreign_keys.iter().map(|fk| fk.renamed(to_new)).collect();
            if let Some(identity) = state.identity.as_mut().filter(|i| i.column == r.from) {
                identity.column.clone_from(&r.to);
            }
        }
        ChangeKind::SetPrimaryKey(p) => {
            columns_exist(state, &p.columns).map_err(|m| bad("columns", m))?;
            if state.primary_key == p.columns {
                return Err(bad("columns", format!("({}) is the primary key already", p.columns.join(", "))));
            }
            for name in &p.columns {
                let c = state.column_mut(name).expect("checked above");
                if !c.not_null {
                    c.not_null = true;
                    checks.push(DataCheck::NotNull { column: name.clone() });
                }
            }
            checks.push(DataCheck::Unique { columns: p.columns.clone() });
            state.primary_key = p.columns.clone();
            // ALTER TABLE ... ADD PRIMARY KEY names the new key `<table>_pkey`.
            state.primary_key_name = None;
        }
        ChangeKind::AddConstraint(c) => {
            if state.names.contains(&c.name) {
                return Err(bad("name", format!("{:?} is already the name of a constraint or index", c.name)));
            }
            let set = [c.check.is_some(), c.unique.is_some(), c.foreign_key.is_some()].iter().filter(|s| **s).count();
            if set != 1 {
                return Err(bad("name", "set exactly one of check, unique and foreignKey".into()));
            }
            if let Some(expression) = &c.check {
                state.checks.push((c.name.clone(), format!("CHECK ({expression})")));
                checks.push(DataCheck::Check { name: c.name.clone(), expression: expression.clone() });
            }
            if let Some(columns) = &c.unique {
                columns_exist(state, columns).map_err(|m| bad("unique", m))?;
                state.uniques.push((c.name.clone(), columns.clone()));
                checks.push(DataCheck::Unique { columns: columns.clone() });
            }
            if let Some(fk) = &c.foreign_key {
                columns_exist(state, &fk.columns).map_err(|m| bad("foreignKey.columns", m))?;
                if fk.columns.len() != fk.references.columns.len() || fk.columns.is_empty() {
                    return Err(bad(
                        "foreignKey.references.columns",
                        "must name as many columns as foreignKey.columns".into(),
                    ));
                }
                state.foreign_keys.push((c.name.clone(), fk.clone()));
                checks.push(DataCheck::References { name: c.name.clone(), key: fk.clone() });
            }
            state.names.push(c.name.clone());
        }
        ChangeKind::AddIdentity(i) => {
            let Some(column) = state.column(&i.column) else {
                return Err(bad("column", format!("column {:?} does not exist", i.column)));
            };
            if !is_integer_type(&column.data_type) {
                return Err(bad(
                    "column",
                    format!("column {:?} has type {}; an identity needs an integer", i.column, column.data_type),
                ));
            }
            if column.identity.is_some() || state.identity.is_some() {
                return Err(bad("column", "the table has an identity column already".into()));
            }
            // The identity moves past the highest value of the column the rows
            // are gone through by; on another column the copy could never
            // tell which values are taken.
            if state.primary_key != [i.column.clone()] {
                return Err(bad(
                    "column",
                    format!(
                        "{:?} is not the table's one-column primary key ({}); the identity goes on the key",
                        i.column,
                        state.primary_key.join(", ")
                    ),
                ));
            }
            if let Some(cache) = i.cache.filter(|c| *c < 1) {
                return Err(bad("cache", format!("{cache} is not a cache size (at least 1)")));
            }
            state.identity = Some(i.clone());
            let c = state.column_mut(&i.column).expect("checked above");
            c.not_null = true;
            c.default = None;
        }
    }
    Ok(Applied { checks, layer })
}

/// The generated column (other than `column` itself) whose expression reads `column`.
fn generated_reading(state: &State, column: &str) -> Option<String> {
    state
        .columns
        .iter()
        .find(|c| c.name != column && c.generated.as_deref().is_some_and(|g| rebind::reads_column(g, column)))
        .map(|c| c.name.clone())
}

/// `numeric(12,2)` as `numeric`, `timestamp(3) with time zone` as
/// `timestamp with time zone`: a cast to it keeps a constant as PostgreSQL
/// prints it, where a cast with a modifier would be printed too.
fn without_modifiers(data_type: &str) -> String {
    let mut out = String::new();
    let mut depth = 0;
    for c in data_type.chars() {
        match c {
            '(' => depth += 1,
            ')' => depth -= 1,
            _ if depth == 0 => out.push(c),
            _ => {}
        }
    }
    out.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// Follows the added columns through a change: added, renamed, dropped, or
/// converted (whose value is then taken as not constant).
fn track_added(added: &mut Vec<(String, bool)>, change: &Change) {
    match change.kind() {
        Ok(ChangeKind::AddColumn(a)) => added.push((a.name.clone(), a.default.as_deref().is_none_or(is_constant))),
        Ok(ChangeKind::RenameColumn(r)) => {
            added.iter_mut().filter(|(name, _)| *name == r.from).for_each(|(name, _)| name.clone_from(&r.to));
        }
        Ok(ChangeKind::DropColumn(d)) => added.retain(|(name, _)| *name != d.name),
        Ok(ChangeKind::AlterColumn(a)) if a.data_type.is_some() => {
            added.iter_mut().filter(|(name, _)| *name == a.column).for_each(|(_, constant)| *constant = false);
        }
        _ => {}
    }
}

/// Follows the base columns through a rename or a drop.
fn track_fates(fates: &mut [(String, Option<String>)], change: &Change) {
    for (_, fate) in fates.iter_mut() {
        match change.kind() {
            Ok(ChangeKind::RenameColumn(r)) if fate.as_deref() == Some(r.from.as_str()) => *fate = Some(r.to.clone()),
            Ok(ChangeKind::DropColumn(d)) if fate.as_deref() == Some(d.name.as_str()) => *fate = None,
            _ => {}
        }
    }
}

/// Whether a default is a literal (a quoted string, a number, true, false or
/// NULL, cast or not): the same at every reading. Anything else may not be
/// (`now()`, `nextval(...)`, `random()`), and is treated as changing.
pub fn is_constant(default: &str) -> bool {
    let mut value = default.trim();
    // Casts: `'x'::text`, `'5'::numeric(12,2)`, `'{}'::character varying[]`.
    while let Some(at) = value.rfind("::") {
        let cast = &value[at + 2..];
        if cast.contains('\'') || cast.contains(')') && !cast.contains('(') {
            break;
        }
        value = value[..at].trim_end();
    }
    let value = value.trim_start_matches('(').trim_end_matches(')').trim();
    if let Some(inner) = value.strip_prefix('\'').and_then(|v| v.strip_suffix('\'')) {
        return !inner.replace("''", "").contains('\'');
    }
    let lower = value.to_ascii_lowercase();
    if matches!(lower.as_str(), "true" | "false" | "null") {
        return true;
    }
    let digits = value.strip_prefix('-').unwrap_or(value);
    !digits.is_empty() && digits.chars().all(|c| c.is_ascii_digit() || c == '.') && digits.matches('.').count() <= 1
}

fn columns_exist(state: &State, columns: &[String]) -> Result<(), String> {
    if columns.is_empty() {
        return Err("names no column".into());
    }
    if let Some(missing) = columns.iter().find(|c| state.column(c).is_none()) {
        return Err(format!("column {missing:?} does not exist"));
    }
    let mut seen = columns.to_vec();
    seen.sort();
    seen.dedup();
    if seen.len() != columns.len() {
        return Err("names a column twice".into());
    }
    Ok(())
}

/// The new table a rebuild makes: its final state, the copy's layers from the
/// rebuild's source row, and what the data must satisfy.
#[derive(Clone, Debug, PartialEq)]
pub struct Rebuild {
    /// The table the copy reads, as it is when the rebuild starts.
    pub base: State,
    pub target: State,
    pub layers: Vec<Layer>,
    /// What the data must satisfy.
    pub data_checks: Vec<ScopedCheck>,
    /// Columns the changes add, by their names in the new table, each with
    /// whether its value is a constant (else it may differ at each reading).
    pub added: Vec<(String, bool)>,
    /// Each base column and its name in the new table (None: dropped).
    pub fates: Vec<(String, Option<String>)>,
}

/// A data check, the change that asks for it, and how many layers come
/// before it (its expressions read the row as those layers leave it).
#[derive(Clone, Debug, PartialEq)]
pub struct ScopedCheck {
    pub change: usize,
    pub depth: usize,
    pub check: DataCheck,
}

impl Rebuild {
    /// Applies `changes` (numbered from `first`) to `base`.
    pub fn new(base: State, changes: &[Change], first: usize) -> Result<Self, InvalidInput> {
        let mut target = base.clone();
        let (mut layers, mut data_checks, mut problems) = (Vec::new(), Vec::new(), Vec::new());
        let mut added: Vec<(String, bool)> = Vec::new();
        let mut fates: Vec<(String, Option<String>)> =
            base.columns.iter().map(|c| (c.name.clone(), Some(c.name.clone()))).collect();
        for (i, change) in changes.iter().enumerate() {
            match apply_layered(&mut target, change, first + i) {
                Ok(applied) => {
                    track_added(&mut added, change);
                    track_fates(&mut fates, change);
                    let (change, depth) = (first + i, layers.len());
                    // NOT NULL asked with a new type reads the converted value:
                    // a `using` may remove NULLs or make them.
                    let converts = applied.layer.is_some();
                    data_checks.extend(applied.checks.into_iter().map(|check| {
                        let after = converts && matches!(check, DataCheck::NotNull { .. });
                        ScopedCheck { change, depth: depth + usize::from(after), check }
                    }));
                    layers.extend(applied.layer);
                }
                Err(problem) => problems.push(problem),
            }
        }
        if !problems.is_empty() {
            return Err(InvalidInput(problems));
        }
        Ok(Self { base, target, layers, data_checks, added, fates })
    }

    /// The new table's columns from `source` (a FROM item naming the rebuild's
    /// source rows, e.g. a table or a filtered subquery): one nested SELECT
    /// per layer, which PostgreSQL flattens.
    pub fn select(&self, source: &str) -> String {
        let mut from = source.to_string();
        for (depth, layer) in self.layers.iter().enumerate() {
            let list: Vec<String> =
                layer.iter().map(|(name, expr)| format!("{expr} AS {}", super::quote::ident(name))).collect();
            from = format!("(SELECT {} FROM {from} AS l{depth})", list.join(", "));
        }
        let names: Vec<String> = self.target.columns.iter().map(|c| super::quote::ident(&c.name)).collect();
        format!("SELECT {} FROM {from} AS rebuilt", names.join(", "))
    }

    /// The rows of `source` (a FROM item with the base's columns and `key`)
    /// as the first `depth` layers leave them, `key` carried through each.
    pub fn rows_at(&self, depth: usize, source: &str, key: &str) -> String {
        let mut from = source.to_string();
        for (d, layer) in self.layers.iter().take(depth).enumerate() {
            let mut list: Vec<String> =
                layer.iter().map(|(name, expr)| format!("{expr} AS {}", super::quote::ident(name))).collect();
            list.push(super::quote::ident(key));
            from = format!("(SELECT {} FROM {from} AS l{d})", list.join(", "));
        }
        from
    }
}

#[cfg(test)]
pub(crate) mod tests;
