//! The SQL a migration runs, in order, as `plan` prints it. Built from the same
//! statement builders the engine executes, so the script is what runs. Pure.

use super::batches::CHUNK_ROWS;
use super::batches::resync_batch_rows;
use super::capture::Capture;
use super::ddl::{create_shadow_table, index_builds};
use super::fidelity::{index_statements, shadow_statements};
use super::names::derived_name;
use super::not_carried::{known_not_carried, undocumented_on_dsql};
use super::quote::ident;
use super::shape::TableShape;
use super::sql::{
    IN_PLACE_LOCK_TIMEOUT_MS, RowStatements, add_identity, begin_batch, drop_default, drop_table, lock_table,
    rename_table, restart_identity, restart_value, select_max_id, set_generated_always, setval_identity,
};
use super::validate::Settings;
use crate::api::{Generation, Phase, RangeCheckpoint, Strategy};
use crate::db::Dialect;

/// One unit of work: statements that run in one transaction, or alone.
#[derive(Clone, Debug, PartialEq)]
pub struct Step {
    pub phase: Phase,
    pub note: String,
    pub statements: Vec<String>,
    /// Several statements in one explicit transaction.
    pub transaction: bool,
    /// How often the step runs (`per batch`, `per chunk`), when not once.
    pub repeat: Option<String>,
}

fn once(phase: Phase, note: impl Into<String>, sql: String) -> Step {
    Step { phase, note: note.into(), statements: vec![sql], transaction: false, repeat: None }
}

/// A step that runs nothing: something the plan must say.
fn note_only(phase: Phase, note: String) -> Step {
    Step { phase, note, statements: Vec::new(), transaction: false, repeat: None }
}

/// What the plan knows about the table now.
pub struct ScriptInput<'a> {
    pub shape: &'a TableShape,
    pub settings: &'a Settings,
    pub dialect: Dialect,
    pub ranges: &'a [RangeCheckpoint],
    pub rows: i64,
    pub batch_rows: i64,
    pub widest_row: i64,
    /// `max(id)` now, for the identity restart shown.
    pub max_id: Option<i64>,
}

pub fn script(input: &ScriptInput) -> Vec<Step> {
    let s = input.settings;
    let mut steps = in_place_steps(input);
    match (s.strategy, input.dialect) {
        // PostgreSQL takes the statement: no copy.
        (Strategy::Auto | Strategy::InPlace, Dialect::Postgres) | (Strategy::InPlace, Dialect::Dsql) => steps,
        // DSQL may refuse it: the copy follows.
        (Strategy::Auto, Dialect::Dsql) | (Strategy::Copy, _) => {
            steps.extend(copy_script(input));
            steps
        }
    }
}

/// The identity added to the table itself (none for `strategy: Copy`).
fn in_place_steps(input: &ScriptInput) -> Vec<Step> {
    let s = input.settings;
    if s.strategy == Strategy::Copy {
        return Vec::new();
    }
    let id = s.id_column.as_str();
    let start = restart_value(input.max_id, s.start_after).unwrap_or(i64::MAX);
    let add = add_identity(&s.source, id, s.generation, start, s.cache(input.dialect));
    let has_default = input.shape.column(id).is_some_and(|c| c.default.is_some());
    let mut steps = match input.dialect {
        Dialect::Postgres => {
            let mut statements = vec![
                format!("BEGIN; SET LOCAL lock_timeout = '{IN_PLACE_LOCK_TIMEOUT_MS}ms'"),
                lock_table(&s.source),
                select_max_id(&s.source, id),
            ];
            if has_default {
                statements.push(drop_default(&s.source, id));
                statements.push("-- the serial's sequence is kept: ALTER SEQUENCE ... OWNED BY NONE".into());
            }
            statements.extend([add, "COMMIT".into()]);
            vec![Step {
                phase: Phase::Swapping,
                note: format!(
                    "in place, one transaction: writers wait for the lock at most {IN_PLACE_LOCK_TIMEOUT_MS} ms, \
                     then it is tried again; START WITH past max(id) read under the lock (now {start})"
                ),
                statements,
                transaction: true,
                repeat: Some("on a lock timeout, with backoff".into()),
            }]
        }
        Dialect::Dsql => vec![once(
            Phase::Swapping,
            if s.strategy == Strategy::Auto {
                "in place, in its own DDL transaction: if DSQL refuses it, nothing changed and the copy below runs"
            } else {
                "in place, in its own DDL transaction (strategy: InPlace fails if DSQL refuses it)"
            },
            add,
        )],
    };
    steps.push(once(
        Phase::Swapping,
        "then the identity past every id, and its next value read back",
        restart_identity(&s.source, id, start),
    ));
    steps
}

/// The copy: shadow table, batches, indexes, verification, the window.
fn copy_script(input: &ScriptInput) -> Vec<Step> {
    let s = input.settings;
    let shape = input.shape;
    let rows = |from, to| RowStatements::new(from, to, &s.id_column, shape, input.dialect, s.generation);
    let (copy, final_sync) = (rows(&s.source, &s.shadow), rows(&s.old, &s.shadow));
    let resync_batch = resync_batch_rows(s, shape, input.widest_row);
    let cache = match (s.cache, input.dialect) {
        (Some(n), _) => format!("CACHE {n} as the spec asks"),
        (None, Dialect::Dsql) => "CACHE 65536, DSQL's fast default".to_string(),
        (None, Dialect::Postgres) => {
            "CACHE 1, PostgreSQL's default here: it caches per session, so a larger cache skips ids on every new connection"
                .to_string()
        }
    };
    let mut steps = vec![once(
        Phase::CreatingTarget,
        format!("the shadow table, ids kept by a BY DEFAULT identity ({cache})"),
        create_shadow_table(shape, s, input.dialect),
    )];
    let f = &shape.fidelity;
    for sql in shadow_statements(f, shape, &s.source, &s.shadow, input.dialect) {
        steps.push(once(Phase::CreatingTarget, "what the table carries besides rows", sql));
    }
    for lost in known_not_carried(shape, &s.source, &s.shadow, input.dialect) {
        steps.push(note_only(Phase::CreatingTarget, format!("not carried over: {lost}")));
    }
    if input.dialect == Dialect::Dsql
        && shadow_statements(f, shape, &s.source, &s.shadow, input.dialect).iter().any(|sql| undocumented_on_dsql(sql))
    {
        let note = "COMMENT ON, column grants and WITH GRANT OPTION are not in AWS's pages: each is tried, and one \
                    the server refuses is reported as not carried (status.plan.notCarried and a Warning event)";
        steps.push(note_only(Phase::CreatingTarget, note.into()));
    }

    let capture =
        (input.dialect == Dialect::Postgres && s.change_tracking_column.is_none()).then(|| Capture::of(&s.shadow));
    let proves = capture.as_ref().filter(|_| !s.checksums_always);
    if let Some(c) = proves {
        for sql in c.create(&s.source, &s.id_column) {
            steps.push(once(Phase::Copying, "change capture before the first row: every written id is noted", sql));
        }
        steps.push(once(Phase::Copying, "the log emptied; the copy begins after this commits", c.reset()));
    }
    // The shadow's key, by the name its CREATE TABLE gives it.
    let key =
        shape.primary_key().map(|k| (derived_name(&k.name, &s.source.name, &s.shadow.name), k.definition.clone()));
    if let (Dialect::Postgres, Some((name, _))) = (input.dialect, &key) {
        let note = "the empty shadow's primary key set aside for the copy (saved in the status first;                     kept where its lock is not granted in 1 s)";
        steps.push(once(Phase::Copying, note, format!("ALTER TABLE {} DROP CONSTRAINT {}", s.shadow, ident(name))));
    }
    let ranges = input.ranges.iter().map(|r| format!("{}..{}", r.from, r.to)).collect::<Vec<_>>().join(", ");
    steps.push(Step {
        phase: Phase::Copying,
        note: format!(
            "{} rows in {} id ranges ({ranges}); {} workers; $1 = last id copied in the range, $2 = range end, $3 = {} rows",
            input.rows,
            input.ranges.len(),
            s.parallelism,
            input.batch_rows
        ),
        statements: vec![copy.copy_batch.clone()],
        transaction: false,
        repeat: Some("per batch".into()),
    });
    steps.push(Step {
        phase: Phase::Copying,
        note:
            "fallback for a batch that meets rows already copied: the same batch in one snapshot, existing ids skipped"
                .into(),
        statements: vec![
            begin_batch(input.dialect).to_string(),
            copy.batch_bounds.clone(),
            copy.copy_range.clone(),
            "COMMIT".into(),
        ],
        transaction: true,
        repeat: Some("only on a unique violation".into()),
    });
    if let (Dialect::Postgres, Some((name, definition))) = (input.dialect, &key) {
        let sql = format!("ALTER TABLE {} ADD CONSTRAINT {} {definition}", s.shadow, ident(name));
        steps.push(once(Phase::Copying, "the primary key put back, as it was", sql));
    }
    for index in index_builds(shape, &s.source, &s.shadow, input.dialect) {
        let note = match &index.left_out {
            Some(left_out) => format!("index {} after the copy; {left_out}", index.name),
            None => format!("index {} after the copy", index.name),
        };
        steps.push(once(Phase::Copying, note, index.sql.clone()));
        if input.dialect == Dialect::Dsql {
            steps.push(once(
                Phase::Copying,
                "wait for the index build job (false: read sys.jobs; failed, or wait again)",
                "CALL sys.wait_for_job('<job id>')".into(),
            ));
        }
    }
    for sql in index_statements(f, shape, &s.source, &s.shadow, input.dialect) {
        steps.push(once(Phase::Copying, "what the indexes carry", sql));
    }
    let checksums = match proves {
        Some(c) => {
            steps.extend(catch_up_steps(Phase::Verifying, c, &copy, resync_batch, "the copy proven"));
            "source and shadow (only where the capture cannot prove the copy)"
        }
        None => "source and shadow",
    };
    steps.extend(verification_steps(Phase::Verifying, &copy, resync_batch, checksums));

    if let Some(c) = &capture {
        steps.extend(catch_up_steps(Phase::Swapping, c, &copy, resync_batch, "caught up, the table live"));
        for sql in c.create(&s.source, &s.id_column) {
            let note = "where the capture went off since (a wait, a checksum pass): on again";
            steps.push(once(Phase::Swapping, note, sql));
        }
        steps.push(once(Phase::Swapping, "the log emptied; the last pass begins after this commits", c.reset()));
        steps.extend(verification_steps(Phase::Swapping, &copy, resync_batch, "the last pass, the table live"));
    }
    steps.push(once(
        Phase::Swapping,
        "the window opens: writers get \"relation does not exist\" and retry",
        rename_table(&s.source, &s.old.name),
    ));
    if let Some(c) = &capture {
        steps.push(once(Phase::Swapping, "the ids written since the last pass began", c.written_ids()));
        steps.push(Step {
            phase: Phase::Swapping,
            note: format!("those rows re-synced, $1 = up to {resync_batch} of the ids"),
            statements: vec![
                "BEGIN".into(),
                final_sync.delete_stale_ids.clone(),
                final_sync.insert_missing_ids.clone(),
                "COMMIT".into(),
            ],
            transaction: true,
            repeat: Some("per batch of ids".into()),
        });
    }
    let without = if capture.is_some() { " (only without the capture: no trigger allowed, a TRUNCATE)" } else { "" };
    steps.extend(verification_steps(
        Phase::Swapping,
        &final_sync,
        resync_batch,
        &format!("old table and shadow (rows written since verification){without}"),
    ));
    let restart_with = restart_value(input.max_id, s.start_after).unwrap_or(i64::MAX);
    steps.push(once(
        Phase::Swapping,
        format!("identity past max(id) and startAfter, computed at cut-over (now {restart_with}); setval where RESTART is refused"),
        restart_identity(&s.shadow, &s.id_column, restart_with),
    ));
    steps.push(Step {
        repeat: Some("only if RESTART WITH is refused".into()),
        ..once(Phase::Swapping, "fallback", setval_identity(&s.shadow, &s.id_column, restart_with))
    });
    if s.generation == Generation::Always {
        steps.push(once(Phase::Swapping, "generation: Always", set_generated_always(&s.shadow, &s.id_column)));
    }
    steps.push(once(Phase::Swapping, "the window closes", rename_table(&s.shadow, &s.source.name)));
    if let Some(c) = &capture {
        for sql in c.drop_triggers(&s.old).into_iter().chain(c.drop_objects()) {
            steps.push(once(Phase::Completed, "the change capture goes", sql));
        }
    }
    if !s.retain_old {
        steps.push(once(Phase::Completed, "oldTable.retain: false", drop_table(&s.old)));
    }
    steps
}

fn verification_steps(phase: Phase, st: &RowStatements, batch: i64, what: &str) -> Vec<Step> {
    let per_chunk = Some(format!("per chunk of {CHUNK_ROWS} rows"));
    vec![
        Step {
            phase,
            note: format!(
                "compare {what}: $1 = the chunk's first id, $2 = its last id; a chunk ends here ($2 = {})",
                CHUNK_ROWS - 1
            ),
            statements: vec![st.chunk_end.clone(), st.source_summary.clone(), st.target_summary.clone()],
            transaction: false,
            repeat: per_chunk.clone(),
        },
        Step {
            phase,
            note: format!("re-sync a chunk that differs, {batch} rows per transaction, until a run touches fewer"),
            statements: vec![st.delete_stale.clone(), st.insert_missing.clone()],
            transaction: false,
            repeat: Some("per differing chunk".into()),
        },
    ]
}

/// The capture's catch-up: the noted ids taken out of the log, their rows
/// re-synced (every stale one deleted before any missing one is inserted)
/// and compared with the source's.
fn catch_up_steps(phase: Phase, c: &Capture, st: &RowStatements, batch: i64, what: &str) -> Vec<Step> {
    vec![
        Step {
            phase,
            note: format!("{what}: the ids the capture noted, taken out of its log"),
            statements: vec![c.take_written()],
            transaction: false,
            repeat: Some("per round, until a round finds at most 1,000".into()),
        },
        Step {
            phase,
            note: format!("their rows re-synced, $1 = up to {batch} of the ids, each statement over every batch"),
            statements: vec![st.delete_stale_ids.clone(), st.insert_missing_ids.clone()],
            transaction: false,
            repeat: Some("per batch of ids".into()),
        },
        Step {
            phase,
            note: "and compared with the source's (re-synced again up to twice; then checksums decide)".into(),
            statements: vec![st.source_summary_ids.clone(), st.target_summary_ids.clone()],
            transaction: false,
            repeat: Some("per batch of ids".into()),
        },
    ]
}

/// The script as SQL text with comments.
pub fn render(steps: &[Step]) -> String {
    let mut out = String::new();
    let mut phase = None;
    for step in steps {
        if phase != Some(step.phase) {
            out.push_str(&format!("\n-- ===== {} =====\n", step.phase));
            phase = Some(step.phase);
        }
        out.push_str(&format!("-- {}", step.note));
        if let Some(repeat) = &step.repeat {
            out.push_str(&format!(" [{repeat}]"));
        }
        out.push('\n');
        for sql in &step.statements {
            out.push_str(sql);
            out.push_str(";\n");
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::plan::validate::{TargetSource, validate_spec};
    use crate::engine::testing::{post_tag_shape, spec_for};

    fn input_for<'a>(
        shape: &'a TableShape,
        settings: &'a Settings,
        dialect: Dialect,
        ranges: &'a [RangeCheckpoint],
    ) -> ScriptInput<'a> {
        ScriptInput {
            shape,
            settings,
            dialect,
            ranges,
            rows: 1000,
            batch_rows: 2900,
            widest_row: 80,
            max_id: Some(1_048_576),
        }
    }

    fn copy_spec() -> crate::api::IdentityMigrationSpec {
        crate::api::IdentityMigrationSpec { strategy: Strategy::Copy, ..spec_for("post_tag") }
    }

    #[test]
    fn in_place_on_postgres_is_one_locked_transaction_and_on_dsql_a_probe_before_the_copy() {
        let settings = validate_spec(&spec_for("post_tag"), TargetSource::Spec).unwrap();
        let shape = post_tag_shape();
        let ranges = [RangeCheckpoint::new(1, 1_048_576)];
        let text = render(&script(&input_for(&shape, &settings, Dialect::Postgres, &ranges)));
        let mut at = 0;
        for step in [
            "SET LOCAL lock_timeout = '1000ms'",
            "LOCK TABLE \"public\".\"post_tag\" IN ACCESS EXCLUSIVE MODE",
            "SELECT max(\"id\")::bigint FROM \"public\".\"post_tag\"",
            "ADD GENERATED BY DEFAULT AS IDENTITY (START WITH 1048577 CACHE 1)",
            "COMMIT",
        ] {
            at += text[at..].find(step).unwrap_or_else(|| panic!("{step:?} missing or out of order in:\n{text}"));
        }
        assert!(!text.contains("CREATE TABLE"), "no copy on PostgreSQL: {text}");
        let dsql = render(&script(&input_for(&shape, &settings, Dialect::Dsql, &ranges)));
        assert!(dsql.contains("if DSQL refuses it") && dsql.contains("CREATE TABLE") && !dsql.contains("LOCK TABLE"));
        let copy = validate_spec(&copy_spec(), TargetSource::Spec).unwrap();
        let text = render(&script(&input_for(&shape, &copy, Dialect::Postgres, &ranges)));
        assert!(!text.contains("ADD GENERATED") && text.contains("CREATE TABLE"));
    }

    #[test]
    fn the_script_runs_every_phase_in_order() {
        let settings = validate_spec(&copy_spec(), TargetSource::Spec).unwrap();
        let shape = post_tag_shape();
        let ranges = [RangeCheckpoint::new(1, 1_048_576)];
        let text = render(&script(&input_for(&shape, &settings, Dialect::Postgres, &ranges)));
        assert!(text.contains("IDENTITY (CACHE 1)") && text.contains("caches per session"), "{text}");
        let order = [
            "CREATE TABLE",
            // The capture before the first row, the key aside for the copy.
            "CREATE TRIGGER",
            "DELETE FROM \"public\".\"post_tag_new_log\"",
            "ALTER TABLE \"public\".\"post_tag_new\" DROP CONSTRAINT \"post_tag_new_pkey\"",
            "LIMIT $3::bigint RETURNING",
            "BEGIN ISOLATION LEVEL REPEATABLE READ",
            "ON CONFLICT DO NOTHING",
            "COMMIT",
            "ADD CONSTRAINT \"post_tag_new_pkey\" PRIMARY KEY (id)",
            "CREATE INDEX",
            // Verified by the capture: the noted rows re-synced and compared.
            "RETURNING \"idmig_noted_id\"",
            "r.\"id\" = ANY($1::bigint[])",
            "CREATE TRIGGER",
            "DELETE FROM \"public\".\"post_tag_new_log\"",
            "RENAME TO \"post_tag_old\"",
            "SELECT DISTINCT \"idmig_noted_id\" FROM \"public\".\"post_tag_new_log\"",
            "= ANY($1::bigint[])",
            "RESTART WITH 1048577",
            "RENAME TO \"post_tag\"",
            "DROP TRIGGER \"idmig_capture\" ON \"public\".\"post_tag_old\"",
        ];
        let mut at = 0;
        for needle in order {
            let found = text[at..].find(needle).unwrap_or_else(|| panic!("{needle} missing after byte {at}:\n{text}"));
            at += found;
        }
        assert!(!text.contains("SET GENERATED ALWAYS"));
        assert!(!text.contains("DROP TABLE \"public\".\"post_tag_old\""), "oldTable.retain keeps it");

        // Checksums asked for: no capture before the copy; on DSQL, neither
        // a capture nor a key set aside.
        let mut spec = copy_spec();
        spec.copy.verification = crate::api::VerificationMode::Checksums;
        let settings = validate_spec(&spec, TargetSource::Spec).unwrap();
        let text = render(&script(&input_for(&shape, &settings, Dialect::Postgres, &ranges)));
        let first_trigger = text.find("CREATE TRIGGER").unwrap();
        assert!(first_trigger > text.find("CREATE INDEX").unwrap(), "{text}");
        let text = render(&script(&input_for(&shape, &settings, Dialect::Dsql, &ranges)));
        assert!(!text.contains("CREATE TRIGGER") && !text.contains("DROP CONSTRAINT"), "{text}");
    }

    #[test]
    fn dsql_builds_indexes_asynchronously_and_options_add_steps() {
        let mut spec = copy_spec();
        spec.identity.generation = Generation::Always;
        spec.old_table.retain = false;
        let settings = validate_spec(&spec, TargetSource::Spec).unwrap();
        let shape = post_tag_shape();
        let text = render(&script(&input_for(&shape, &settings, Dialect::Dsql, &[])));
        assert!(text.contains("CREATE INDEX ASYNC"));
        assert!(text.contains("sys.wait_for_job"));
        assert!(text.contains("IDENTITY (CACHE 65536)") && text.contains("DSQL's fast default"));
        assert!(text.contains("\nBEGIN;\n"));
        assert!(text.contains("SET GENERATED ALWAYS"));
        assert!(text.contains("DROP TABLE \"public\".\"post_tag_old\""));
        assert!(!text.contains("TRIGGER"), "DSQL has no triggers: the window re-reads the table");
    }
}
