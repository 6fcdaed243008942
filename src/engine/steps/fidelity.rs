//! Reads what a table carries besides rows ([`Fidelity`]) and gives it to the
//! shadow table; keeps the privileges current into the window; moves the
//! ownership of the sequences behind column defaults to the table that has the
//! name.

use tokio_postgres::Client;

use super::catalog::{optional, table_oid};
use crate::db::{DbError, Dialect, ErrorContext, Session};
use crate::engine::plan::carried::{ExtendedStatistics, Fidelity, Grant, Policy, ReplicaIdentity};
use crate::engine::plan::carried::{Fact, absent_catalog};
use crate::engine::plan::changes::Rebuild;
use crate::engine::plan::changes::carry::carried;
use crate::engine::plan::fidelity::{privilege_statements, statistics_definition_middle};
use crate::engine::plan::not_carried::{is_refusal, refused_note, undocumented_on_dsql};
use crate::engine::plan::quote::ident;
use crate::engine::plan::shape::{TableName, TableShape};

/// What `table` carries besides its rows, or None when it does not exist.
/// On DSQL only what exists there is read: owner, privileges and comments.
pub async fn read_fidelity(client: &Client, table: &TableName, dialect: Dialect) -> Result<Option<Fidelity>, DbError> {
    let Some(oid) = table_oid(client, table).await? else { return Ok(None) };
    let row = client
        .query_one(
            "SELECT pg_catalog.pg_get_userbyid(c.relowner)::text, c.relacl IS NOT NULL, \
                    coalesce(c.reloptions, '{}')::text[], c.relreplident::text, c.relpersistence = 'u', \
                    c.relrowsecurity, c.relforcerowsecurity, current_user::text \
             FROM pg_catalog.pg_class c WHERE c.oid = $1",
            &[&oid],
        )
        .await
        .ctx("read table options")?;
    let mut f = Fidelity {
        owner: row.get(0),
        connected_as: row.get(7),
        storage: row.get(2),
        unlogged: row.get(4),
        row_security: row.get(5),
        force_row_security: row.get(6),
        ..Default::default()
    };
    let has_acl: bool = row.get(1);
    f.grants = optional(&mut f.unread, Fact::Privileges, read_grants(client, oid, has_acl).await)?;
    let comments = read_comments(client, oid).await;
    let comments = optional(&mut f.unread, Fact::Comments, comments.map(Some))?;
    if let Some(Comments { table, columns, constraints, indexes }) = comments {
        (f.comment, f.column_comments, f.constraint_comments, f.index_comments) =
            (table, columns, constraints, indexes);
    }
    // CREATE STATISTICS is in DSQL's supported subsets.
    let statistics = read_extended_statistics(client, oid).await;
    let (statistics, unrecreatable) = optional(&mut f.unread, Fact::ExtendedStatistics, statistics)?;
    f.extended_statistics = statistics;
    f.dependents.extend(unrecreatable);
    if dialect == Dialect::Dsql {
        return Ok(Some(f));
    }
    f.replica_identity = match row.get::<_, String>(3).as_str() {
        "n" => ReplicaIdentity::Nothing,
        "f" => ReplicaIdentity::Full,
        "i" => {
            let index = client
                .query_opt(
                    "SELECT i.relname::text FROM pg_catalog.pg_index x JOIN pg_catalog.pg_class i ON i.oid = x.indexrelid \
                     WHERE x.indrelid = $1 AND x.indisreplident",
                    &[&oid],
                )
                .await
                .ctx("read replica identity")?;
            index.map_or(ReplicaIdentity::Default, |r| ReplicaIdentity::Index(r.get(0)))
        }
        _ => ReplicaIdentity::Default,
    };
    f.statistics_targets = client
        .query(
            "SELECT attname::text, attstattarget::int4 FROM pg_catalog.pg_attribute \
             WHERE attrelid = $1 AND attnum > 0 AND NOT attisdropped AND coalesce(attstattarget::int4, -1) >= 0 \
             ORDER BY attnum",
            &[&oid],
        )
        .await
        .ctx("read statistics targets")?
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    f.policies = client
        .query(
            "SELECT p.polname::text, p.polpermissive, p.polcmd::text, \
                    ARRAY(SELECT CASE WHEN r = 0 THEN 'public' ELSE pg_catalog.pg_get_userbyid(r)::text END \
                          FROM unnest(p.polroles) r ORDER BY 1), \
                    pg_catalog.pg_get_expr(p.polqual, p.polrelid), pg_catalog.pg_get_expr(p.polwithcheck, p.polrelid) \
             FROM pg_catalog.pg_policy p WHERE p.polrelid = $1 ORDER BY 1",
            &[&oid],
        )
        .await
        .ctx("read policies")?
        .iter()
        .map(|r| Policy {
            name: r.get(0),
            permissive: r.get(1),
            command: match r.get::<_, String>(2).as_str() {
                "r" => "SELECT",
                "a" => "INSERT",
                "w" => "UPDATE",
                "d" => "DELETE",
                _ => "ALL",
            }
            .to_string(),
            roles: r.get::<_, Vec<String>>(3).into_iter().filter(|r| r != "public").collect(),
            using: r.get(4),
            check: r.get(5),
        })
        .collect();
    f.dependents.extend(dependents(client, oid).await?);
    Ok(Some(f))
}

/// Privileges of the table (its owner's defaults spelled out once any column
/// or table privilege was changed) and of its columns; None while untouched.
async fn read_grants(client: &Client, oid: u32, has_acl: bool) -> Result<Option<Vec<Grant>>, DbError> {
    let rows = match client
        .query(
            "SELECT NULL::text, CASE WHEN a.grantee = 0 THEN NULL ELSE pg_catalog.pg_get_userbyid(a.grantee)::text END, \
                    a.privilege_type::text, a.is_grantable \
             FROM pg_catalog.pg_class c, \
                  pg_catalog.aclexplode(coalesce(c.relacl, pg_catalog.acldefault('r', c.relowner))) a \
             WHERE c.oid = $1 \
             UNION ALL \
             SELECT t.attname::text, CASE WHEN a.grantee = 0 THEN NULL ELSE pg_catalog.pg_get_userbyid(a.grantee)::text END, \
                    a.privilege_type::text, a.is_grantable \
             FROM pg_catalog.pg_attribute t, pg_catalog.aclexplode(t.attacl) a \
             WHERE t.attrelid = $1 AND t.attnum > 0 AND NOT t.attisdropped AND t.attacl IS NOT NULL",
            &[&oid],
        )
        .await
        .ctx("read privileges")
    {
        Err(e) if absent_catalog(e.sqlstate.as_deref()) => {
            tracing::info!(error = %e, "aclexplode unavailable; reading privileges from information_schema");
            client.query(STANDARD_PRIVILEGES, &[&oid]).await.ctx("read privileges from information_schema")?
        }
        other => other?,
    };
    let column_grants = rows.iter().any(|r| r.get::<_, Option<String>>(0).is_some());
    if !has_acl && !column_grants {
        return Ok(None);
    }
    // A NULL grantee is PUBLIC.
    let mut grants: Vec<Grant> = rows
        .iter()
        .map(|r| Grant { column: r.get(0), grantee: r.get(1), privilege: r.get(2), grantable: r.get(3) })
        .collect();
    grants.sort();
    grants.dedup();
    Ok(Some(grants))
}

/// The same rows from the SQL standard's views, for a server without
/// `aclexplode`: column privileges are those not granted on the whole table;
/// the owner's own privileges carry no grant option there, as in the catalog.
const STANDARD_PRIVILEGES: &str = "\
    WITH t AS (SELECT n.nspname::text AS s, c.relname::text AS r, pg_catalog.pg_get_userbyid(c.relowner)::text AS o \
               FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace WHERE c.oid = $1) \
    SELECT NULL::text, NULLIF(p.grantee::text, 'PUBLIC'), p.privilege_type::text, \
           p.is_grantable = 'YES' AND p.grantee::text <> t.o \
    FROM information_schema.table_privileges p, t WHERE p.table_schema = t.s AND p.table_name = t.r \
    UNION ALL \
    SELECT p.column_name::text, NULLIF(p.grantee::text, 'PUBLIC'), p.privilege_type::text, \
           p.is_grantable = 'YES' AND p.grantee::text <> t.o \
    FROM information_schema.column_privileges p, t WHERE p.table_schema = t.s AND p.table_name = t.r \
      AND NOT EXISTS (SELECT 1 FROM information_schema.table_privileges w WHERE w.table_schema = t.s \
                      AND w.table_name = t.r AND w.grantee = p.grantee AND w.privilege_type = p.privilege_type)";

/// Comments of the table, its columns, constraints and secondary indexes.
struct Comments {
    table: Option<String>,
    columns: Vec<(String, String)>,
    constraints: Vec<(String, String)>,
    indexes: Vec<(String, String)>,
}

async fn read_comments(client: &Client, oid: u32) -> Result<Comments, DbError> {
    let pairs = |sql: &'static str| async move {
        let rows = client.query(sql, &[&oid]).await.ctx("read comments")?;
        Ok::<Vec<(String, String)>, DbError>(rows.iter().map(|r| (r.get(0), r.get(1))).collect())
    };
    let table = client
        .query_opt(
            "SELECT description FROM pg_catalog.pg_description \
             WHERE classoid = 'pg_catalog.pg_class'::regclass AND objoid = $1 AND objsubid = 0",
            &[&oid],
        )
        .await
        .ctx("read comments")?
        .map(|r| r.get(0));
    let columns = pairs(
        "SELECT a.attname::text, d.description FROM pg_catalog.pg_description d \
         JOIN pg_catalog.pg_attribute a ON a.attrelid = d.objoid AND a.attnum = d.objsubid \
         WHERE d.classoid = 'pg_catalog.pg_class'::regclass AND d.objoid = $1 AND d.objsubid > 0 ORDER BY a.attnum",
    )
    .await?;
    let constraints = pairs(
        "SELECT c.conname::text, d.description FROM pg_catalog.pg_constraint c \
         JOIN pg_catalog.pg_description d ON d.classoid = 'pg_catalog.pg_constraint'::regclass AND d.objoid = c.oid \
         WHERE c.conrelid = $1 ORDER BY 1",
    )
    .await?;
    let indexes = pairs(
        "SELECT i.relname::text, d.description FROM pg_catalog.pg_index x \
         JOIN pg_catalog.pg_class i ON i.oid = x.indexrelid \
         JOIN pg_catalog.pg_description d ON d.classoid = 'pg_catalog.pg_class'::regclass AND d.objoid = i.oid \
              AND d.objsubid = 0 \
         WHERE x.indrelid = $1 ORDER BY 1",
    )
    .await?;
    Ok(Comments { table, columns, constraints, indexes })
}

/// The table's extended statistics objects, as `CREATE STATISTICS` recreates
/// them, and those that cannot be recreated, described.
async fn read_extended_statistics(
    client: &Client,
    oid: u32,
) -> Result<(Vec<ExtendedStatistics>, Vec<String>), DbError> {
    let (mut carried, mut not) = (Vec::new(), Vec::new());
    for r in client
        .query(
            "SELECT s.stxname::text, pg_catalog.pg_get_statisticsobjdef(s.oid), pg_catalog.quote_ident(n.nspname), \
                    pg_catalog.quote_ident(s.stxname), pg_catalog.quote_ident(c.relname) \
             FROM pg_catalog.pg_statistic_ext s JOIN pg_catalog.pg_namespace n ON n.oid = s.stxnamespace \
             JOIN pg_catalog.pg_class c ON c.oid = s.stxrelid WHERE s.stxrelid = $1 ORDER BY 1",
            &[&oid],
        )
        .await
        .ctx("read extended statistics")?
    {
        let (name, def): (String, String) = (r.get(0), r.get(1));
        match statistics_definition_middle(&def, r.get(2), r.get(3), r.get(4)) {
            Some(definition) => carried.push(ExtendedStatistics { name, definition }),
            None => not.push(format!("statistics object {name} ({def}), which cannot be recreated")),
        }
    }
    Ok((carried, not))
}

/// Objects bound to the table's OID that are not the table's own and not
/// reported otherwise (foreign keys, triggers and views are): functions with
/// `BEGIN ATOMIC` bodies, rules, other tables' policies, publications, and
/// anything else `pg_depend` knows of.
async fn dependents(client: &Client, oid: u32) -> Result<Vec<String>, DbError> {
    let rows = client
        .query(
            "SELECT DISTINCT pg_catalog.pg_describe_object(d.classid, d.objid, 0) \
             FROM pg_catalog.pg_depend d \
             WHERE d.refclassid = 'pg_catalog.pg_class'::regclass AND d.refobjid = $1 AND d.deptype <> 'i' \
               AND d.classid NOT IN ('pg_catalog.pg_class'::regclass, 'pg_catalog.pg_attrdef'::regclass, \
                                     'pg_catalog.pg_trigger'::regclass) \
               AND NOT (d.classid = 'pg_catalog.pg_constraint'::regclass AND EXISTS (SELECT 1 \
                    FROM pg_catalog.pg_constraint c WHERE c.oid = d.objid AND (c.conrelid = $1 OR c.contype = 'f'))) \
               AND NOT (d.classid = 'pg_catalog.pg_policy'::regclass AND EXISTS (SELECT 1 \
                    FROM pg_catalog.pg_policy p WHERE p.oid = d.objid AND p.polrelid = $1)) \
               AND NOT (d.classid = 'pg_catalog.pg_statistic_ext'::regclass AND EXISTS (SELECT 1 \
                    FROM pg_catalog.pg_statistic_ext s WHERE s.oid = d.objid AND s.stxrelid = $1)) \
               AND NOT (d.classid = 'pg_catalog.pg_rewrite'::regclass AND EXISTS (SELECT 1 \
                    FROM pg_catalog.pg_rewrite w WHERE w.oid = d.objid AND w.ev_class <> $1)) \
             ORDER BY 1",
            &[&oid],
        )
        .await
        .ctx("read dependent objects")?;
    Ok(rows.iter().map(|r| r.get(0)).collect())
}

/// `shape` with what its table carries besides rows filled in.
pub async fn with_fidelity(
    session: &mut Session,
    mut shape: TableShape,
    dialect: Dialect,
) -> Result<TableShape, DbError> {
    let Some(table) = shape.table.clone() else { return Ok(shape) };
    let table = &table;
    if let Some(f) =
        session.retry("read table extras", |c| async move { read_fidelity(&c, table, dialect).await }).await?
    {
        shape.fidelity = f;
    }
    Ok(shape)
}

/// Runs each statement in its own transaction (DSQL: one DDL per
/// transaction); every one is idempotent.
pub async fn apply(session: &mut Session, what: &str, statements: &[String]) -> Result<(), DbError> {
    for sql in statements {
        session.retry(what, |c| async move { c.batch_execute(sql).await.ctx(what) }).await?;
    }
    Ok(())
}

/// Like [`apply`], but on DSQL a statement AWS does not document (a comment,
/// a column grant, a grant option) that the server refuses is reported, not
/// fatal: the notes of what was refused.
pub async fn apply_carrying(
    session: &mut Session,
    what: &str,
    statements: &[String],
    dialect: Dialect,
) -> Result<Vec<String>, DbError> {
    let mut refused = Vec::new();
    for sql in statements {
        match session.retry(what, |c| async move { c.batch_execute(sql).await.ctx(what) }).await {
            Err(e) if dialect == Dialect::Dsql && undocumented_on_dsql(sql) && is_refusal(e.sqlstate.as_deref()) => {
                let code = e.sqlstate.as_deref().unwrap_or_default();
                tracing::warn!(statement = %sql, error = %e, "the server refused a statement AWS does not document; \
                    reported as not carried");
                refused.push(refused_note(sql, code, &e.message));
            }
            other => other?,
        }
    }
    Ok(refused)
}

/// Makes the privileges of `to` those of `from` again when they differ: a
/// GRANT or REVOKE on the table during the copy reaches the new table. A
/// rebuild's new table takes column privileges by the columns' new names.
pub async fn sync_privileges(
    session: &mut Session,
    from: &TableName,
    to: &TableName,
    dialect: Dialect,
    through: Option<&Rebuild>,
) -> Result<(), DbError> {
    let (source, target) = session
        .retry("read privileges", |c| async move {
            let source = read_fidelity_privileges(&c, from).await?;
            let target = read_fidelity_privileges(&c, to).await?;
            Ok((source, target))
        })
        .await?;
    let (Some(source), Some(target)) = (source, target) else { return Ok(()) };
    let source = match through {
        Some(rebuild) => carried(&source, rebuild, &[]).0,
        None => source,
    };
    if source.grants == target.grants && source.owner == target.owner {
        return Ok(());
    }
    tracing::info!(table = %to, "privileges changed during the migration; applying them again");
    // What the server refuses was reported when the shadow table was made.
    apply_carrying(session, "apply privileges", &privilege_statements(&source, to, dialect), dialect).await?;
    Ok(())
}

/// Owner and privileges only.
async fn read_fidelity_privileges(client: &Client, table: &TableName) -> Result<Option<Fidelity>, DbError> {
    let Some(oid) = table_oid(client, table).await? else { return Ok(None) };
    let row = client
        .query_one(
            "SELECT pg_catalog.pg_get_userbyid(relowner)::text, relacl IS NOT NULL, current_user::text \
             FROM pg_catalog.pg_class WHERE oid = $1",
            &[&oid],
        )
        .await
        .ctx("read privileges")?;
    let grants = read_grants(client, oid, row.get(1)).await?;
    Ok(Some(Fidelity { owner: row.get(0), connected_as: row.get(2), grants, ..Default::default() }))
}

/// The sequences behind `table`'s column defaults (`serial` columns other
/// than the id) become owned by `table`: owned by the old table they would
/// block its drop, and a rollback gives them back the same way. Only a
/// sequence its twin column owns moves: one no column owns, or shared by
/// other tables, keeps its owner (owning it would drop it with the table).
pub async fn adopt_sequences(session: &mut Session, table: &TableName) -> Result<usize, DbError> {
    let pairs: Vec<(String, String)> = session
        .retry("read column sequences", |c| async move {
            let Some(oid) = table_oid(&c, table).await? else { return Ok(Vec::new()) };
            let rows = c
                .query(
                    "SELECT DISTINCT s.oid::regclass::text, a.attname::text \
                     FROM pg_catalog.pg_attrdef ad \
                     JOIN pg_catalog.pg_depend d ON d.classid = 'pg_catalog.pg_attrdef'::regclass AND d.objid = ad.oid \
                          AND d.refclassid = 'pg_catalog.pg_class'::regclass \
                     JOIN pg_catalog.pg_class s ON s.oid = d.refobjid AND s.relkind = 'S' \
                     JOIN pg_catalog.pg_attribute a ON a.attrelid = ad.adrelid AND a.attnum = ad.adnum \
                     WHERE ad.adrelid = $1 AND NOT EXISTS (SELECT 1 FROM pg_catalog.pg_depend o \
                          WHERE o.classid = 'pg_catalog.pg_class'::regclass AND o.objid = s.oid AND o.deptype = 'a' \
                            AND o.refobjid = $1 AND o.refobjsubid = a.attnum) \
                       AND EXISTS (SELECT 1 FROM pg_catalog.pg_depend o \
                          JOIN pg_catalog.pg_attribute oa ON oa.attrelid = o.refobjid AND oa.attnum = o.refobjsubid \
                          WHERE o.classid = 'pg_catalog.pg_class'::regclass AND o.objid = s.oid AND o.deptype = 'a' \
                            AND oa.attname = a.attname)",
                    &[&oid],
                )
                .await
                .ctx("read column sequences")?;
            Ok(rows.iter().map(|r| (r.get(0), r.get(1))).collect())
        })
        .await?;
    let statements: Vec<String> =
        pairs.iter().map(|(seq, column)| format!("ALTER SEQUENCE {seq} OWNED BY {table}.{}", ident(column))).collect();
    apply(session, "move sequence ownership", &statements).await?;
    Ok(statements.len())
}
