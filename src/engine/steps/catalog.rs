//! Reading what the database holds: a table's shape, the names around it, and
//! the catalog facts that crash-safe phases decide on. Plain reads, no writes.

use tokio_postgres::Client;

use crate::db::{DbError, ErrorContext, Session};
use crate::engine::plan::carried::{Fact, Unread, absent_catalog};
use crate::engine::plan::names::{IndexName, new_table_key};
use crate::engine::plan::phase::Names;
use crate::engine::plan::preflight::Surroundings;
use crate::engine::plan::shape::TableName;
use crate::engine::plan::shape::{Column, Constraint, ConstraintKind, Index, OutgoingForeignKey, TableShape};
use crate::engine::plan::validate::Settings;

/// A relation's oid and kind, or None when the name is free.
async fn relation(client: &Client, table: &TableName) -> Result<Option<(u32, char, i64)>, DbError> {
    let row = client
        .query_opt(
            "SELECT c.oid, c.relkind::text, c.reltuples::bigint \
             FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace \
             WHERE n.nspname = $1 AND c.relname = $2",
            &[&table.schema, &table.name],
        )
        .await
        .ctx("look up table")?;
    Ok(row.map(|r| {
        let kind: String = r.get(1);
        (r.get(0), kind.chars().next().unwrap_or('?'), r.get(2))
    }))
}

/// The table's oid, or None when the name is free.
pub async fn table_oid(client: &Client, table: &TableName) -> Result<Option<u32>, DbError> {
    Ok(relation(client, table).await?.map(|r| r.0))
}

pub async fn table_exists(client: &Client, table: &TableName) -> Result<bool, DbError> {
    Ok(relation(client, table).await?.is_some())
}

/// Whether `table` holds no row.
pub async fn is_empty(client: &Client, table: &TableName) -> Result<bool, DbError> {
    let sql = format!("SELECT NOT EXISTS (SELECT 1 FROM {table})");
    Ok(client.query_one(sql.as_str(), &[]).await.ctx("read table")?.get(0))
}

/// Whether `table` has a column `name` (not dropped).
pub async fn has_column(client: &Client, table: &TableName, name: &str) -> Result<bool, DbError> {
    let row = client
        .query_one(
            "SELECT EXISTS (SELECT 1 FROM pg_catalog.pg_attribute WHERE attrelid = pg_catalog.to_regclass($1) \
             AND attname = $2 AND attnum > 0 AND NOT attisdropped)",
            &[&table.to_string(), &name],
        )
        .await
        .ctx("read columns")?;
    Ok(row.get(0))
}

/// The table's indexes by name, the primary key's marked (none when the
/// table does not exist).
pub async fn index_names(client: &Client, table: &TableName) -> Result<Vec<IndexName>, DbError> {
    let rows = client
        .query(
            "SELECT ic.relname::text, i.indisprimary FROM pg_catalog.pg_index i \
             JOIN pg_catalog.pg_class ic ON ic.oid = i.indexrelid \
             WHERE i.indrelid = pg_catalog.to_regclass($1) ORDER BY 1",
            &[&table.to_string()],
        )
        .await
        .ctx("read index names")?;
    Ok(rows.iter().map(|r| IndexName { name: r.get(0), primary: r.get(1) }).collect())
}

/// `a` or `d` when `column` of `table` is an identity column, None otherwise
/// (or when the table or column does not exist).
pub async fn identity_kind(client: &Client, table: &TableName, column: &str) -> Result<Option<char>, DbError> {
    let row = client
        .query_opt(
            "SELECT a.attidentity::text FROM pg_catalog.pg_attribute a \
             JOIN pg_catalog.pg_class c ON c.oid = a.attrelid \
             JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace \
             WHERE n.nspname = $1 AND c.relname = $2 AND a.attname = $3 AND NOT a.attisdropped",
            &[&table.schema, &table.name, &column],
        )
        .await
        .ctx("read identity column")?;
    Ok(row.and_then(|r| r.get::<_, String>(0).chars().next()))
}

/// Everything the engine needs to know about a table, or None when it does not exist.
pub async fn read_shape(client: &Client, table: &TableName) -> Result<Option<TableShape>, DbError> {
    let Some((oid, kind, reltuples)) = relation(client, table).await? else {
        return Ok(None);
    };
    let mut shape = TableShape { table: Some(table.clone()), kind, estimated_rows: reltuples, ..Default::default() };

    for r in client
        .query(
            "SELECT a.attname::text, pg_catalog.format_type(a.atttypid, a.atttypmod), a.attnotnull, \
                    pg_catalog.pg_get_expr(d.adbin, d.adrelid), a.attgenerated::text, a.attidentity::text, \
                    CASE WHEN a.attcollation <> 0 AND a.attcollation <> t.typcollation \
                         THEN pg_catalog.quote_ident(cn.nspname) || '.' || pg_catalog.quote_ident(co.collname) END \
             FROM pg_catalog.pg_attribute a \
             JOIN pg_catalog.pg_type t ON t.oid = a.atttypid \
             LEFT JOIN pg_catalog.pg_attrdef d ON d.adrelid = a.attrelid AND d.adnum = a.attnum \
             LEFT JOIN pg_catalog.pg_collation co ON co.oid = a.attcollation \
             LEFT JOIN pg_catalog.pg_namespace cn ON cn.oid = co.collnamespace \
             WHERE a.attrelid = $1 AND a.attnum > 0 AND NOT a.attisdropped ORDER BY a.attnum",
            &[&oid],
        )
        .await
        .ctx("read columns")?
    {
        let expr: Option<String> = r.get(3);
        let generated = r.get::<_, String>(4).chars().next();
        let identity = r.get::<_, String>(5).chars().next();
        let is_generated = generated == Some('s');
        shape.columns.push(Column {
            name: r.get(0),
            data_type: r.get(1),
            not_null: r.get(2),
            default: if is_generated { None } else { expr.clone() },
            generated: if is_generated { expr } else { None },
            identity,
            collation: r.get(6),
        });
    }

    for r in client
        .query(
            "SELECT c.conname::text, c.contype::text, pg_catalog.pg_get_constraintdef(c.oid), \
                    ARRAY(SELECT a.attname::text FROM unnest(c.conkey) WITH ORDINALITY k(attnum, ord) \
                          JOIN pg_catalog.pg_attribute a ON a.attrelid = c.conrelid AND a.attnum = k.attnum \
                          ORDER BY k.ord), \
                    c.conrelid = $1, c.conrelid::regclass::text, c.confrelid::regclass::text \
             FROM pg_catalog.pg_constraint c WHERE c.conrelid = $1 OR c.confrelid = $1 ORDER BY c.conname",
            &[&oid],
        )
        .await
        .ctx("read constraints")?
    {
        let name: String = r.get(0);
        let kind: String = r.get(1);
        let definition: String = r.get(2);
        let own: bool = r.get(4);
        let kind = match (kind.as_str(), own) {
            ("p", true) => ConstraintKind::PrimaryKey,
            ("u", true) => ConstraintKind::Unique,
            ("c", true) => ConstraintKind::Check,
            ("f", _) => {
                let (from, to): (String, String) = (r.get(5), r.get(6));
                // A key of this table to another, valid: the new table gets it too.
                if own && from != to && !definition.contains("NOT VALID") {
                    shape.outgoing_foreign_keys.push(OutgoingForeignKey { name, columns: r.get(3), definition });
                } else {
                    shape.foreign_keys.push(format!("{name} ({from} -> {to})"));
                }
                continue;
            }
            ("x", true) => {
                shape.unsupported.push(format!("exclusion constraint {name}"));
                continue;
            }
            _ => continue,
        };
        shape.constraints.push(Constraint { name, kind, definition, columns: r.get(3) });
    }

    for r in client
        .query(
            "SELECT i.relname::text, x.indisunique, am.amname::text, pg_catalog.pg_get_indexdef(x.indexrelid), \
                    pg_catalog.quote_ident(i.relname), pg_catalog.quote_ident(n.nspname), \
                    pg_catalog.quote_ident(t.relname), x.indisvalid \
             FROM pg_catalog.pg_index x \
             JOIN pg_catalog.pg_class i ON i.oid = x.indexrelid \
             JOIN pg_catalog.pg_class t ON t.oid = x.indrelid \
             JOIN pg_catalog.pg_namespace n ON n.oid = t.relnamespace \
             JOIN pg_catalog.pg_am am ON am.oid = i.relam \
             WHERE x.indrelid = $1 AND NOT EXISTS \
                   (SELECT 1 FROM pg_catalog.pg_constraint c WHERE c.conindid = x.indexrelid AND c.conrelid = x.indrelid) \
             ORDER BY i.relname",
            &[&oid],
        )
        .await
        .ctx("read indexes")?
    {
        let name: String = r.get(0);
        let unique: bool = r.get(1);
        let method: String = r.get(2);
        let def: String = r.get(3);
        if !r.get::<_, bool>(7) {
            shape.unsupported.push(format!("index {name} is invalid (a failed build); drop or rebuild it"));
            continue;
        }
        match index_definition_tail(&def, unique, r.get(4), r.get(5), r.get(6), &method) {
            Some(definition) => shape.indexes.push(Index { name, unique, method, definition }),
            None => shape.unsupported.push(format!("index {name} ({def})")),
        }
    }

    shape.triggers = optional(
        &mut shape.unread,
        Fact::Triggers,
        strings(
            client,
            "SELECT tgname::text FROM pg_catalog.pg_trigger WHERE tgrelid = $1 AND NOT tgisinternal ORDER BY 1",
            oid,
        )
        .await,
    )?;
    let views = strings(
        client,
        "SELECT DISTINCT v.oid::regclass::text FROM pg_catalog.pg_depend d \
         JOIN pg_catalog.pg_rewrite w ON w.oid = d.objid \
         JOIN pg_catalog.pg_class v ON v.oid = w.ev_class \
         WHERE d.refobjid = $1 AND d.classid = 'pg_catalog.pg_rewrite'::regclass AND v.oid <> $1 ORDER BY 1",
        oid,
    )
    .await;
    // Without pg_rewrite, the standard's view of the same dependencies (views
    // of roles the engine's role belongs to).
    let views = match views {
        Err(e) if absent_catalog(e.sqlstate.as_deref()) => {
            tracing::info!(error = %e, "pg_rewrite unreadable; reading dependent views from information_schema");
            strings(
                client,
                "SELECT DISTINCT pg_catalog.quote_ident(u.view_schema) || '.' || pg_catalog.quote_ident(u.view_name) \
                 FROM information_schema.view_table_usage u \
                 JOIN pg_catalog.pg_class c ON c.relname = u.table_name \
                 JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace AND n.nspname = u.table_schema \
                 WHERE c.oid = $1 ORDER BY 1",
                oid,
            )
            .await
        }
        other => other,
    };
    shape.dependent_views = optional(&mut shape.unread, Fact::DependentViews, views)?;
    shape.inheritance = optional(
        &mut shape.unread,
        Fact::Inheritance,
        strings(
            client,
            "SELECT CASE WHEN inhrelid = $1 THEN inhparent ELSE inhrelid END::regclass::text \
             FROM pg_catalog.pg_inherits WHERE inhrelid = $1 OR inhparent = $1 ORDER BY 1",
            oid,
        )
        .await,
    )?;
    Ok(Some(shape))
}

/// The answer of a read whose catalog the server may lack; when it does, the
/// fact is marked unread (empty here) and preflight decides.
pub fn optional<T: Default>(unread: &mut Vec<Unread>, fact: Fact, read: Result<T, DbError>) -> Result<T, DbError> {
    match read {
        Err(e) if absent_catalog(e.sqlstate.as_deref()) => {
            // Read on every look at the table; reported once, in status.plan.notCarried.
            tracing::debug!(error = %e, ?fact, "the server would not give this fact; marked unread");
            let code = e.sqlstate.clone().unwrap_or_default();
            unread.push(Unread { fact, error: format!("{code}: {}", e.message) });
            Ok(T::default())
        }
        other => other,
    }
}

async fn strings(client: &Client, sql: &str, oid: u32) -> Result<Vec<String>, DbError> {
    let rows = client.query(sql, &[&oid]).await.ctx("read table dependencies")?;
    Ok(rows.iter().map(|r| r.get(0)).collect())
}

/// Which of `names` are taken by any relation (table, index, sequence, view)
/// in `schema`, and how many ordinary tables the database holds.
pub async fn surroundings(client: &Client, schema: &str, names: &[String]) -> Result<Surroundings, DbError> {
    let taken = client
        .query(
            "SELECT c.relname::text FROM pg_catalog.pg_class c \
             JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace \
             WHERE n.nspname = $1 AND c.relname = ANY($2) ORDER BY 1",
            &[&schema, &names],
        )
        .await
        .ctx("check free names")?;
    let count = client
        .query_one(
            "SELECT count(*) FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace \
             WHERE c.relkind IN ('r', 'p') AND n.nspname NOT IN ('pg_catalog', 'information_schema') \
             AND n.nspname NOT LIKE 'pg_toast%' AND n.nspname <> 'sys'",
            &[],
        )
        .await
        .ctx("count tables")?;
    // DSQL keeps no pg_stat_activity: there the mark needs no session list.
    let sees_all_sessions = client
        .query_one(
            "SELECT rolsuper OR pg_catalog.pg_has_role(current_user, 'pg_read_all_stats', 'MEMBER') \
             FROM pg_catalog.pg_roles WHERE rolname = current_user",
            &[],
        )
        .await
        .map(|r| r.get(0))
        .unwrap_or(false);
    Ok(Surroundings {
        names_taken: taken.iter().map(|r| r.get(0)).collect(),
        table_count: count.get(0),
        sees_all_sessions,
    })
}

/// Whether an index exists and finished building.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum IndexState {
    Absent,
    Valid,
    /// A failed or unfinished build (DSQL leaves it INVALID when its job fails).
    Invalid,
}

pub async fn index_state(client: &Client, schema: &str, name: &str) -> Result<IndexState, DbError> {
    let row = client
        .query_opt(
            "SELECT x.indisvalid FROM pg_catalog.pg_index x JOIN pg_catalog.pg_class i ON i.oid = x.indexrelid \
             JOIN pg_catalog.pg_namespace n ON n.oid = i.relnamespace WHERE n.nspname = $1 AND i.relname = $2",
            &[&schema, &name],
        )
        .await
        .ctx("read index state")?;
    Ok(match row {
        None => IndexState::Absent,
        Some(r) if r.get::<_, bool>(0) => IndexState::Valid,
        Some(_) => IndexState::Invalid,
    })
}

/// The widest of a sample of rows, in bytes, for sizing batches under the
/// per-transaction byte limit. A fallback guess when the engine cannot measure.
pub async fn widest_row_bytes(client: &Client, table: &TableName) -> i64 {
    let sql = format!("SELECT max(pg_catalog.pg_column_size(s.*))::bigint FROM (SELECT * FROM {table} LIMIT 2000) s");
    match client.query_one(sql.as_str(), &[]).await {
        Ok(row) => row.get::<_, Option<i64>>(0).unwrap_or(0),
        Err(e) => {
            tracing::debug!(error = %e, "could not sample row widths; assuming 2 KiB rows");
            2048
        }
    }
}

/// The planner's histogram of the id column (quantile bounds, ascending), or
/// empty when there are no statistics or the engine keeps none (then ranges
/// are cut by id width).
pub async fn id_histogram(client: &Client, table: &TableName, column: &str) -> Vec<i64> {
    let sql = "SELECT histogram_bounds::text::bigint[] FROM pg_catalog.pg_stats \
               WHERE schemaname = $1 AND tablename = $2 AND attname = $3";
    match client.query_opt(sql, &[&table.schema, &table.name, &column]).await {
        Ok(Some(row)) => row.get::<_, Option<Vec<i64>>>(0).unwrap_or_default(),
        Ok(None) => Vec::new(),
        Err(e) => {
            tracing::debug!(error = %e, "no id statistics; cutting ranges by id width");
            Vec::new()
        }
    }
}

/// Which of the migration's three names exist, and whether the table under
/// the name is the new one.
/// Whether `table` has a constraint named `name`.
pub async fn has_constraint(client: &Client, table: &TableName, name: &str) -> Result<bool, DbError> {
    let row = client
        .query_one(
            "SELECT EXISTS (SELECT 1 FROM pg_catalog.pg_constraint k JOIN pg_catalog.pg_class t ON t.oid = k.conrelid \
             JOIN pg_catalog.pg_namespace n ON n.oid = t.relnamespace \
             WHERE n.nspname = $1 AND t.relname = $2 AND k.conname = $3)",
            &[&table.schema, &table.name, &name],
        )
        .await
        .ctx("read constraints")?;
    Ok(row.get(0))
}

/// Which of the migration's three names exist, and whether the table under
/// the name is the new one. `original` is the OID of the table the
/// migration started from, as the status recorded it.
pub async fn read_names(s: &Settings, original: Option<i64>, session: &mut Session) -> Result<Names, DbError> {
    session
        .retry("inspect tables", |c| async move {
            let table_is_new = match s.changes.is_empty() {
                true => identity_kind(&c, &s.source, &s.id_column).await?.is_some(),
                // A rebuild's new table has its key's own name until the swap
                // hands it the original names (PostgreSQL); then it is the
                // table that is not the original.
                false => {
                    has_constraint(&c, &s.source, &new_table_key(&s.shadow, &s.changes)).await?
                        || match original {
                            Some(oid) => table_oid(&c, &s.source).await?.is_some_and(|found| i64::from(found) != oid),
                            None => false,
                        }
                }
            };
            Ok(Names {
                table: table_exists(&c, &s.source).await?,
                table_is_new,
                shadow: table_exists(&c, &s.shadow).await?,
                old: table_exists(&c, &s.old).await?,
            })
        })
        .await
}

/// The part of `pg_get_indexdef` after `USING <method> `, checked against the
/// prefix PostgreSQL prints (the table named with or without its schema).
/// The names are as `quote_ident` prints them.
pub fn index_definition_tail(
    def: &str,
    unique: bool,
    index: &str,
    schema: &str,
    table: &str,
    method: &str,
) -> Option<String> {
    let head = format!("CREATE {}INDEX {index} ON ", if unique { "UNIQUE " } else { "" });
    let rest = def.strip_prefix(&head)?;
    let rest = rest.strip_prefix("ONLY ").unwrap_or(rest);
    let using = format!(" USING {method} ");
    // A temporary table's schema prints as `pg_temp`, whatever its own name.
    let temporary = schema.starts_with("pg_temp_").then(|| format!("pg_temp.{table}"));
    [Some(format!("{schema}.{table}")), temporary, Some(table.to_string())]
        .iter()
        .flatten()
        .find_map(|name| rest.strip_prefix(name.as_str())?.strip_prefix(using.as_str()))
        .map(str::to_string)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn index_definition_tail_is_taken_only_after_the_exact_prefix() {
        let tail = index_definition_tail(
            "CREATE INDEX post_tag_post_id_idx ON public.post_tag USING btree (post_id)",
            false,
            "post_tag_post_id_idx",
            "public",
            "post_tag",
            "btree",
        );
        assert_eq!(tail.as_deref(), Some("(post_id)"));
        let tail = index_definition_tail(
            "CREATE UNIQUE INDEX \"Odd USING btree x\" ON \"My S\".\"T USING btree \" USING btree (a) INCLUDE (b)",
            true,
            "\"Odd USING btree x\"",
            "\"My S\"",
            "\"T USING btree \"",
            "btree",
        );
        assert_eq!(tail.as_deref(), Some("(a) INCLUDE (b)"));
        let tail = index_definition_tail("CREATE INDEX i ON t USING btree (a)", false, "i", "public", "t", "btree");
        assert_eq!(tail.as_deref(), Some("(a)"), "unqualified when the schema is on the search path");
        let tail = index_definition_tail(
            "CREATE INDEX i ON pg_temp.r USING btree (a) WHERE (a > 1)",
            false,
            "i",
            "pg_temp_3",
            "r",
            "btree",
        );
        assert_eq!(tail.as_deref(), Some("(a) WHERE (a > 1)"), "a temporary table's schema prints as pg_temp");
        assert_eq!(
            index_definition_tail("CREATE INDEX j ON t USING hash (a)", false, "i", "public", "t", "btree"),
            None
        );
    }
}
