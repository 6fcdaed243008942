//! Names of the new table's objects, derived from the source's. Pure.

use super::quotas::MAX_IDENTIFIER_BYTES;

/// A name for an object of the new table, derived from the source object's name:
/// `post_tag_pkey` on `post_tag` becomes `post_tag_new_pkey` on `post_tag_new`.
/// Kept within the identifier limit with a stable hash suffix when too long.
pub fn derived_name(original: &str, source_table: &str, new_table: &str) -> String {
    let candidate = match original.strip_prefix(source_table) {
        Some(rest) if !rest.is_empty() => format!("{new_table}{rest}"),
        _ => format!("{new_table}_{original}"),
    };
    fit_identifier(&candidate)
}

/// `name` cut to PostgreSQL's 63 bytes, with a hash of the whole where cut.
pub fn fit_identifier(name: &str) -> String {
    if name.len() <= MAX_IDENTIFIER_BYTES {
        return name.to_string();
    }
    let hash = fnv1a(name.as_bytes());
    let mut cut = MAX_IDENTIFIER_BYTES - 9;
    while !name.is_char_boundary(cut) {
        cut -= 1;
    }
    format!("{}_{:08x}", &name[..cut], hash as u32)
}

fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf29ce484222325u64, |h, b| (h ^ *b as u64).wrapping_mul(0x100000001b3))
}

/// The name of the primary key a rebuild's new table is created with: it
/// tells the new table from the original under either name, so it is the
/// new table's own, with a hash of the changes (an earlier migration's new
/// table, now the original, has `<shadow>_pkey` already).
pub fn new_table_key(shadow: &super::shape::TableName, changes: &[crate::api::changes::Change]) -> String {
    let text = serde_json::to_string(changes).unwrap_or_default();
    let hash = fnv1a(format!("{shadow} {text}").as_bytes()) as u32;
    fit_identifier(&format!("{}_{hash:08x}_pkey", shadow.name))
}

/// An index (with the constraint it backs, if any) of a table at a swap:
/// its name and whether it is the primary key's.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IndexName {
    pub name: String,
    pub primary: bool,
}

/// The names a migration hands over at its swap, recorded before anything
/// changes: the original primary key's, and every other index's and
/// unique constraint's (with those the changes add).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OriginalNames {
    pub key: String,
    pub others: Vec<String>,
}

impl OriginalNames {
    /// The names recorded in `plan` when the migration was planned, if any.
    pub fn recorded(plan: &crate::api::PlanStatus) -> Option<Self> {
        Some(Self { key: plan.original_key.clone()?, others: plan.original_names.clone() })
    }

    /// The names of `shape` (the table as it is before the migration) and
    /// of the unique constraints `changes` add; None without a primary key.
    pub fn of(shape: &super::shape::TableShape, changes: &[crate::api::changes::Change]) -> Option<Self> {
        use super::shape::ConstraintKind;
        let mut key = shape.primary_key()?.name.clone();
        // A new key is named as ALTER TABLE ... ADD PRIMARY KEY names it.
        if let (true, Some(table)) = (changes.iter().any(|c| c.set_primary_key.is_some()), &shape.table) {
            key = format!("{}_pkey", table.name);
        }
        let mut others: Vec<String> = shape
            .constraints
            .iter()
            .filter(|c| c.kind == ConstraintKind::Unique)
            .map(|c| c.name.clone())
            .chain(shape.indexes.iter().map(|i| i.name.clone()))
            .chain(changes.iter().filter_map(|c| {
                let added = c.add_constraint.as_ref()?;
                added.unique.is_some().then(|| added.name.clone())
            }))
            .collect();
        others.sort();
        others.dedup();
        Some(Self { key, others })
    }
}

/// The renames still to make, as `(from, to)` in order, so that the table
/// `incoming` (named so now) carries the original names as `ALTER TABLE`
/// would have left them, and `outgoing` the names derived for its own name
/// (its primary key `outgoing_key`). Decided from the two tables' index
/// names as they are: a rename already made is not planned again, so the
/// steps can be made one per transaction (DSQL's rule) and a crash between
/// two resumes here. Each index rename renames the constraint it backs.
/// The outgoing table sets each name aside before the incoming one takes it.
pub fn handover(
    source_table: &str,
    names: &OriginalNames,
    incoming_table: &str,
    incoming: &[IndexName],
    outgoing_table: &str,
    outgoing: &[IndexName],
    outgoing_key: &str,
) -> Vec<(String, String)> {
    let mut asides = Vec::new();
    let mut takes = Vec::new();
    for index in outgoing {
        if index.primary && index.name == names.key && outgoing_key != names.key {
            asides.push((index.name.clone(), outgoing_key.to_string()));
        } else if !index.primary && names.others.contains(&index.name) {
            asides.push((index.name.clone(), derived_name(&index.name, source_table, outgoing_table)));
        }
    }
    for index in incoming {
        if index.primary {
            if index.name != names.key {
                takes.push((index.name.clone(), names.key.clone()));
            }
        } else if let Some(name) = names
            .others
            .iter()
            .find(|n| derived_name(n, source_table, incoming_table) == index.name && **n != index.name)
        {
            takes.push((index.name.clone(), name.clone()));
        }
    }
    asides.extend(takes);
    asides
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn derived_names_follow_the_table_and_fit_the_limit() {
        assert_eq!(derived_name("post_tag_pkey", "post_tag", "post_tag_new"), "post_tag_new_pkey");
        assert_eq!(derived_name("idx_post", "post_tag", "post_tag_new"), "post_tag_new_idx_post");
        let long = derived_name(&"x".repeat(60), "t", "t_new");
        assert_eq!(long.len(), MAX_IDENTIFIER_BYTES);
        assert_eq!(long, derived_name(&"x".repeat(60), "t", "t_new"), "stable");
        assert_ne!(long, derived_name(&format!("{}y", "x".repeat(59)), "t", "t_new"));
        let multibyte = derived_name(&"é".repeat(40), "t", "t_new");
        assert!(multibyte.len() <= MAX_IDENTIFIER_BYTES);
    }

    #[test]
    fn a_swap_hands_every_name_to_the_table_taking_the_name_one_rename_at_a_time() {
        let ix = |name: &str, primary: bool| IndexName { name: name.into(), primary };
        let names = OriginalNames {
            key: "t_pkey".into(),
            others: vec!["t_code_key".into(), "t_qty_idx".into(), "added_u".into()],
        };
        let pairs = |renames: Vec<(String, String)>| {
            renames.into_iter().map(|(a, b)| format!("{a} -> {b}")).collect::<Vec<_>>()
        };
        // Forward: the original (now t_old) sets its names aside, the new
        // table (t_new, its key named by a hash) takes them.
        let new_table = [ix("t_new_1a2b3c4d_pkey", true), ix("t_new_code_key", false), ix("t_new_added_u", false)];
        let old_table = [ix("t_pkey", true), ix("t_code_key", false), ix("t_qty_idx", false), ix("users_own", false)];
        assert_eq!(
            pairs(handover("t", &names, "t_new", &new_table, "t_old", &old_table, "t_old_pkey")),
            [
                "t_pkey -> t_old_pkey",
                "t_code_key -> t_old_code_key",
                "t_qty_idx -> t_old_qty_idx",
                "t_new_1a2b3c4d_pkey -> t_pkey",
                "t_new_code_key -> t_code_key",
                "t_new_added_u -> added_u",
            ]
        );
        // A crash after two renames: only the rest is planned.
        let new_table = [ix("t_new_1a2b3c4d_pkey", true), ix("t_new_code_key", false), ix("t_new_added_u", false)];
        let old_table = [ix("t_old_pkey", true), ix("t_old_code_key", false), ix("t_qty_idx", false)];
        assert_eq!(
            pairs(handover("t", &names, "t_new", &new_table, "t_old", &old_table, "t_old_pkey")),
            [
                "t_qty_idx -> t_old_qty_idx",
                "t_new_1a2b3c4d_pkey -> t_pkey",
                "t_new_code_key -> t_code_key",
                "t_new_added_u -> added_u"
            ]
        );
        // Done: nothing is left.
        let new_table = [ix("t_pkey", true), ix("t_code_key", false), ix("added_u", false)];
        let old_table = [ix("t_old_pkey", true), ix("t_old_code_key", false), ix("t_old_qty_idx", false)];
        assert!(handover("t", &names, "t_new", &new_table, "t_old", &old_table, "t_old_pkey").is_empty());
        // Back (a rollback, or a window put back): the same with the roles turned.
        assert_eq!(
            pairs(handover("t", &names, "t_old", &old_table, "t_new", &new_table, "t_new_1a2b3c4d_pkey")),
            [
                "t_pkey -> t_new_1a2b3c4d_pkey",
                "t_code_key -> t_new_code_key",
                "added_u -> t_new_added_u",
                "t_old_pkey -> t_pkey",
                "t_old_code_key -> t_code_key",
                "t_old_qty_idx -> t_qty_idx",
            ]
        );
    }
}
