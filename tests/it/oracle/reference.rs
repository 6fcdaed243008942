//! The reference: each change of a TableMigration as PostgreSQL's own
//! `ALTER TABLE`, written here independently of the engine's planner.

use identity_migrator::api::Generation;
use identity_migrator::api::changes::{Change, ChangeKind};

use tokio_postgres::Client;

use crate::support::q;

/// The `ALTER TABLE` statements of `change` on `table` (qualified). A new
/// primary key replaces the one named `key_name`, when there is one.
fn statements(table: &str, change: &Change, key_name: Option<&str>) -> Vec<String> {
    let alter = |clause: String| format!("ALTER TABLE {table} {clause}");
    let list = |cols: &[String]| cols.iter().map(|c| q(c)).collect::<Vec<_>>().join(", ");
    match change.kind().expect("one key") {
        ChangeKind::AlterColumn(a) => {
            let c = q(&a.column);
            let mut out = Vec::new();
            if let Some(t) = &a.data_type {
                let using = a.using.as_ref().map(|u| format!(" USING ({u})")).unwrap_or_default();
                out.push(alter(format!("ALTER COLUMN {c} TYPE {t}{using}")));
            }
            match a.not_null {
                Some(true) => out.push(alter(format!("ALTER COLUMN {c} SET NOT NULL"))),
                Some(false) => out.push(alter(format!("ALTER COLUMN {c} DROP NOT NULL"))),
                None => {}
            }
            if let Some(d) = &a.default {
                out.push(alter(format!("ALTER COLUMN {c} SET DEFAULT ({d})")));
            }
            if a.drop_default {
                out.push(alter(format!("ALTER COLUMN {c} DROP DEFAULT")));
            }
            out
        }
        ChangeKind::AddColumn(a) => {
            let default = a.default.as_ref().map(|d| format!(" DEFAULT ({d})")).unwrap_or_default();
            let not_null = if a.not_null { " NOT NULL" } else { "" };
            vec![alter(format!("ADD COLUMN {} {}{default}{not_null}", q(&a.name), a.data_type))]
        }
        ChangeKind::DropColumn(d) => vec![alter(format!("DROP COLUMN {}", q(&d.name)))],
        ChangeKind::RenameColumn(r) => vec![alter(format!("RENAME COLUMN {} TO {}", q(&r.from), q(&r.to)))],
        ChangeKind::SetPrimaryKey(p) => {
            let drop = key_name.map(|k| format!("DROP CONSTRAINT {}, ", q(k))).unwrap_or_default();
            vec![alter(format!("{drop}ADD PRIMARY KEY ({})", list(&p.columns)))]
        }
        ChangeKind::AddConstraint(c) => {
            let what = match (&c.check, &c.unique, &c.foreign_key) {
                (Some(check), _, _) => format!("CHECK ({check})"),
                (_, Some(cols), _) => format!("UNIQUE ({})", list(cols)),
                (_, _, Some(fk)) => format!(
                    "FOREIGN KEY ({}) REFERENCES {} ({})",
                    list(&fk.columns),
                    q(&fk.references.table),
                    list(&fk.references.columns)
                ),
                _ => panic!("a constraint of no kind"),
            };
            vec![alter(format!("ADD CONSTRAINT {} {what}", q(&c.name)))]
        }
        ChangeKind::AddIdentity(i) => {
            let generation = match i.generation {
                Generation::Always => "ALWAYS",
                Generation::ByDefault => "BY DEFAULT",
            };
            let c = q(&i.column);
            vec![
                alter(format!("ALTER COLUMN {c} DROP DEFAULT")),
                alter(format!("ALTER COLUMN {c} SET NOT NULL")),
                alter(format!("ALTER COLUMN {c} ADD GENERATED {generation} AS IDENTITY")),
            ]
        }
    }
}

/// Applies `changes` to `schema.table` by ALTER TABLE, all in one
/// transaction: Ok, or the server's refusal (SQLSTATE and message) with
/// nothing changed.
pub async fn alter_table(client: &Client, schema: &str, table: &str, changes: &[Change]) -> Result<(), String> {
    let qualified = format!("{}.{}", q(schema), q(table));
    client.batch_execute(&format!("BEGIN; SET LOCAL search_path = {}", q(schema))).await.unwrap();
    for change in changes {
        let key: Option<String> = client
            .query_opt(
                "SELECT conname::text FROM pg_constraint WHERE conrelid = $1::text::regclass AND contype = 'p'",
                &[&qualified],
            )
            .await
            .unwrap()
            .map(|r| r.get(0));
        for sql in statements(&qualified, change, key.as_deref()) {
            if let Err(e) = client.batch_execute(&sql).await {
                client.batch_execute("ROLLBACK").await.unwrap();
                let code = e.code().map(|c| c.code().to_string()).unwrap_or_default();
                return Err(format!("{code} {}: {sql}", crate::support::db_message(&e)));
            }
        }
    }
    client.batch_execute("COMMIT").await.unwrap();
    Ok(())
}
