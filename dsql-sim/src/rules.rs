//! DSQL's rules for a session: what it refuses, its per-transaction limits,
//! and what a commit must pass (age, schema changes, conflicts).

use std::sync::atomic::Ordering;

use tokio::io::{AsyncRead, AsyncWrite};

use crate::bump;
use crate::jobs::{Build, new_job_id};
use crate::session::{Io, Session, Txn, literal, refusal};
use crate::sql::{self, Kind, Refused, Statement};
use crate::wire;

impl<R: AsyncRead + Unpin, W: AsyncWrite + Unpin> Session<R, W> {
    /// The statement as the backend must run it for DSQL's answer: the
    /// catalog through DSQL's names, and DSQL's version.
    pub(crate) fn as_dsql(&self, text: &str) -> String {
        if Statement::parse(text).is_show("server_version") {
            return format!("SELECT {} AS server_version", literal(&self.shared.config.server_version));
        }
        sql::through_dsql_catalog(text)
    }

    /// Whether DSQL runs `s` now; the statement to send when it does.
    pub(crate) async fn check(&mut self, s: &Statement) -> Io<Result<String, Refused>> {
        if let Some(r) = sql::refusal(s, self.shared.strictness()) {
            return Ok(Err(r));
        }
        if let Some(f) = self.shared.take_fault(s, false) {
            return Ok(Err(refusal(f.code, f.message)));
        }
        let age = self.shared.config.limits.transaction_age;
        if let Some(t) = &mut self.txn {
            if t.aborted {
                return Ok(Err(refusal(
                    "25P02",
                    "current transaction is aborted, commands ignored until end of transaction block",
                )));
            }
            if t.started.elapsed() > age && !matches!(s.kind, Kind::Rollback) {
                t.aborted = true;
                bump(&self.shared.stats.age_limit_errors);
                return Ok(Err(refusal("54000", format!("transaction age limit of {}s exceeded", age.as_secs()))));
            }
        }
        if s.kind == Kind::Begin {
            self.txn = Some(Txn::new());
        }
        let is_ddl = matches!(s.kind, Kind::Ddl { .. } | Kind::CreateIndexAsync { .. } | Kind::ValidateAsync { .. });
        if let Some(t) = &self.txn {
            if is_ddl && t.ddl > 0 {
                return Ok(Err(refusal("0A000", "unsupported: more than one DDL statement in a transaction")));
            }
            if (is_ddl && t.dml) || (matches!(s.kind, Kind::Dml { .. }) && t.ddl > 0) {
                return Ok(Err(refusal("0A000", "unsupported: DDL and DML in the same transaction")));
            }
        }
        // create-sequence-syntax-support.html: identity is BIGINT only.
        if let Some((table, column)) = sql::identity_added_to(s) {
            let bigint = format!(
                "SELECT coalesce((SELECT atttypid = 'bigint'::regtype FROM pg_attribute \
                 WHERE attrelid = to_regclass({}) AND attname = {}), true)",
                literal(&table),
                literal(&column)
            );
            if self.query_bool(&bigint).await? == Some(false) {
                return Ok(Err(refusal("0A000", "identity columns must be of type bigint")));
            }
        }
        if sql::is_sync_index(s)
            && let Some(table) = sql::table_after_on(s)
            && self.query_bool(&format!("SELECT EXISTS (SELECT 1 FROM {table})")).await? == Some(true)
        {
            return Ok(Err(refusal(
                "0A000",
                "CREATE INDEX on a table with rows is not supported; use CREATE INDEX ASYNC",
            )));
        }
        if let Some(index) = sql::dropped_index(s) {
            // DSQL: dropping an index whose build runs cancels the build.
            self.shared.jobs.cancel(&index).await;
        }
        let mut text = s.sql.clone();
        if let Kind::CreateIndexAsync { name, table } = &s.kind {
            // An index lives in its table's schema: one of that name elsewhere is another.
            let named = sql::table_after_on(s).unwrap_or_else(|| table.clone());
            let exists = format!(
                "SELECT EXISTS (SELECT 1 FROM pg_class WHERE relname = {name} AND relkind = 'i' \
                 AND relnamespace = coalesce((SELECT relnamespace FROM pg_class WHERE oid = to_regclass({named})), \
                 (SELECT oid FROM pg_namespace WHERE nspname = current_schema()))) \
                 OR EXISTS (SELECT 1 FROM sys.jobs j JOIN dsql_sim.job_tables t USING (job_id) \
                            WHERE j.object_name = {name} AND j.status IN ('submitted', 'processing') \
                            AND t.table_oid IS NOT DISTINCT FROM to_regclass({named}))",
                name = literal(name),
                named = literal(&named),
            );
            if self.query_bool(&exists).await? == Some(true) {
                return Ok(Err(refusal("42P07", format!("relation \"{name}\" already exists"))));
            }
            let Some(build_sql) = sql::background_build(s) else {
                return Ok(Err(refusal("42601", "syntax error in CREATE INDEX ASYNC")));
            };
            text = self.submit(name, table, &named, build_sql);
        }
        if let Kind::ValidateAsync { constraint, table } = &s.kind {
            // Tables of one name in two schemas are two tables: the job's is the one the statement names.
            let named = sql::table_after_alter_async(s).unwrap_or_else(|| table.clone());
            text = self.submit(constraint, table, &named, sql::synchronous(s));
        }
        if let Some(t) = &mut self.txn {
            for name in s.names() {
                let version = self.shared.schema_version(&name);
                t.seen.entry(name).or_insert(version);
            }
            match &s.kind {
                Kind::Ddl { table } => {
                    t.ddl += 1;
                    t.changes.extend(table.clone());
                }
                Kind::CreateIndexAsync { .. } | Kind::ValidateAsync { .. } => t.ddl += 1,
                Kind::Dml { .. } => t.dml = true,
                _ => {}
            }
        }
        Ok(Ok(text))
    }

    /// Submits a job on `object` of `table` that runs `sql` once the
    /// transaction commits; the statement the backend runs instead, which
    /// answers the job id as DSQL does.
    fn submit(&mut self, object: &str, table: &str, table_as_named: &str, sql: String) -> String {
        let job_id = new_job_id();
        // One statement, as the client sent one: the job and the stand-in's note of its table.
        let text = format!(
            "WITH job AS (INSERT INTO sys.jobs (job_id, status, object_name) VALUES ({id}, 'submitted', {object}) \
             RETURNING job_id), noted AS (INSERT INTO dsql_sim.job_tables SELECT job_id, to_regclass({table}) FROM job) \
             SELECT job_id FROM job",
            id = literal(&job_id),
            object = literal(object),
            table = literal(table_as_named)
        );
        if let Some(t) = &mut self.txn {
            let (index, table, table_as_named) = (object.to_string(), table.to_string(), table_as_named.to_string());
            t.builds.push(Build { job_id, index, table, table_as_named, sql });
        }
        text
    }

    /// Rows (index rows counted) and bytes PostgreSQL counts as changed by
    /// this session since its statistics were last flushed.
    pub(crate) async fn counted(&mut self) -> Io<(i64, i64)> {
        let counted = self
            .internal(
                "SELECT coalesce(sum((s.n_tup_ins + s.n_tup_upd + s.n_tup_del) * (1 + ix.n)), 0)::bigint, \
                        coalesce(sum((s.n_tup_ins + s.n_tup_upd) * w.bytes), 0)::bigint \
                 FROM pg_stat_xact_user_tables s \
                 CROSS JOIN LATERAL (SELECT count(*) AS n FROM pg_index i \
                                     WHERE i.indrelid = s.relid AND NOT i.indisprimary) ix \
                 CROSS JOIN LATERAL (SELECT coalesce(sum(CASE WHEN a.attlen > 0 THEN a.attlen \
                                                         ELSE coalesce(st.avg_width, 32) END), 0) AS bytes \
                                     FROM pg_attribute a LEFT JOIN pg_stats st ON st.schemaname = s.schemaname \
                                          AND st.tablename = s.relname AND st.attname = a.attname \
                                     WHERE a.attrelid = s.relid AND a.attnum > 0 AND NOT a.attisdropped) w \
                 WHERE s.schemaname NOT IN ('sys', 'dsql_sim')",
            )
            .await?;
        let Ok(rows) = counted else { return Ok((0, 0)) };
        let value =
            |i: usize| rows.first().and_then(|r| r.get(i).cloned().flatten()).and_then(|v| v.parse::<i64>().ok());
        Ok((value(0).unwrap_or(0), value(1).unwrap_or(0)))
    }

    /// Rows and bytes changed so far in the open transaction, against the limits.
    pub(crate) async fn within_limits(&mut self) -> Io<Result<(), Refused>> {
        let (rows, bytes) = self.counted().await?;
        let (rows0, bytes0) = self.txn.as_ref().and_then(|t| t.baseline).unwrap_or((0, 0));
        let (rows, bytes) = (rows - rows0, bytes - bytes0);
        let limits = &self.shared.config.limits;
        if rows > limits.rows_per_transaction {
            bump(&self.shared.stats.row_limit_errors);
            return Ok(Err(refusal("54000", "transaction row limit exceeded")));
        }
        if bytes > limits.bytes_per_transaction {
            bump(&self.shared.stats.row_limit_errors);
            let mb = limits.bytes_per_transaction / (1024 * 1024);
            return Ok(Err(refusal("54000", format!("transaction size limit {mb}mb exceeded"))));
        }
        Ok(Ok(()))
    }

    /// The client's COMMIT of an explicit transaction.
    pub(crate) async fn commit(&mut self) -> Io<()> {
        let aborted = self.txn.as_ref().is_some_and(|t| t.aborted);
        if aborted {
            // As PostgreSQL answers COMMIT in a failed transaction.
            self.rollback().await?;
            self.txn = None;
            self.reply(&[wire::command_complete("ROLLBACK")]).await?;
            return self.reply_ready(b'I').await;
        }
        match self.try_commit().await? {
            Ok(()) => {
                self.reply(&[wire::command_complete("COMMIT")]).await?;
                self.reply_ready(b'I').await
            }
            Err(why) => {
                self.reply(&[wire::error("ERROR", why.code, &why.message, None)]).await?;
                self.reply_ready(b'I').await
            }
        }
    }

    /// Commits the open transaction on the backend unless DSQL would refuse
    /// it: past its age, a table it read changed by DDL since (OC001), or a
    /// drawn conflict (OC000). Starts the index builds it submitted.
    pub(crate) async fn try_commit(&mut self) -> Io<Result<(), Refused>> {
        let Some(txn) = self.txn.take() else { return Ok(Ok(())) };
        let age = self.shared.config.limits.transaction_age;
        let schema_changed = txn.seen.iter().any(|(name, v)| self.shared.schema_version(name) > *v);
        let draw = self.shared.conflict_permille.load(Ordering::Relaxed);
        let conflict = (txn.dml || txn.ddl > 0)
            && draw > 0
            && spread_conflict(self.shared.writing_commits.fetch_add(1, Ordering::Relaxed), draw);
        let why = if txn.started.elapsed() > age {
            bump(&self.shared.stats.age_limit_errors);
            Some(refusal("54000", format!("transaction age limit of {}s exceeded", age.as_secs())))
        } else if schema_changed {
            bump(&self.shared.stats.schema_conflicts);
            Some(refusal("40001", "schema has been updated by another transaction, please retry: (OC001)"))
        } else if conflict {
            // DSQL reports conflicts as 40001 with the OC code in the message;
            // AWS's connectors also expect the OC code as the SQLSTATE itself.
            // Every other conflict is sent that way.
            let n = self.shared.stats.conflicts.fetch_add(1, Ordering::Relaxed);
            if n % 2 == 1 {
                bump(&self.shared.stats.conflicts_as_oc000);
                Some(refusal("OC000", "change conflicts with another transaction, please retry"))
            } else {
                Some(refusal("40001", "change conflicts with another transaction, please retry: (OC000)"))
            }
        } else {
            None
        };
        if let Some(why) = why {
            self.rollback().await?;
            return Ok(Err(why));
        }
        let delay = self.shared.commit_delay_ms.load(Ordering::Relaxed);
        if delay > 0 && (txn.dml || txn.ddl > 0) {
            tokio::time::sleep(std::time::Duration::from_millis(delay)).await;
        }
        if let Err(e) = self.internal("COMMIT").await? {
            return Ok(Err(refusal("40001", e)));
        }
        for table in &txn.changes {
            self.shared.bump_schema(table);
        }
        self.shared.record("COMMIT".into());
        for build in txn.builds {
            let shared = self.shared.clone();
            self.shared.jobs.start(build, move |table| shared.bump_schema(table)).await;
        }
        Ok(Ok(()))
    }

    /// Rolls the backend's transaction back (an error only means there was none).
    pub(crate) async fn rollback(&mut self) -> Io<()> {
        let _ = self.internal("ROLLBACK").await?;
        Ok(())
    }

    pub(crate) async fn open_implicit(&mut self) -> Io<()> {
        self.internal("BEGIN").await?.map_err(std::io::Error::other)?;
        let mut txn = Txn::new();
        txn.baseline = Some(self.counted().await?);
        self.txn = Some(txn);
        Ok(())
    }
}

/// Whether the `n`th committing write transaction (from 0) fails, for
/// `permille` of them failing: spread evenly (every fifth at 200), so that
/// a short run meets its share of conflicts as surely as a long one.
pub(crate) fn spread_conflict(n: u64, permille: u64) -> bool {
    (n + 1) * permille / 1000 > n * permille / 1000
}

#[cfg(test)]
mod tests {
    use super::spread_conflict;

    #[test]
    fn conflicts_are_spread_evenly_over_the_writing_commits() {
        let failing = |permille| (0..1000).filter(|&n| spread_conflict(n, permille)).collect::<Vec<_>>();
        assert_eq!(failing(200).len(), 200);
        assert_eq!(&failing(200)[..3], &[4, 9, 14], "every fifth, from the fifth");
        assert_eq!(failing(1000).len(), 1000, "all of them");
        assert!(failing(0).is_empty());
        assert_eq!(failing(1), vec![999]);
    }
}
