//! Generated cases of the differential test: tables of several column
//! types, NULLs, defaults, CHECKs, UNIQUEs, partial and expression indexes
//! and comments, and lists of one to four changes of every kind, drawn from
//! a seed. `IDMIG_ORACLE_CASES` (default 200) and `IDMIG_ORACLE_SEED` choose
//! how many and which; a failure names the seed and the case, which
//! `IDMIG_ORACLE_ONLY=<n>,<m>` runs again alone.

use std::sync::Arc;

use super::dsql::through_stand_in;
use super::{Case, differences};
use crate::support::stand_in::StandIn;
use crate::support::{TestDb, q};

/// A small deterministic generator (splitmix64): the same seed, the same cases.
struct Draw(u64);

impl Draw {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }

    fn chance(&mut self, percent: u64) -> bool {
        self.next() % 100 < percent
    }

    fn pick<'a, T>(&mut self, from: &'a [T]) -> &'a T {
        &from[self.below(from.len())]
    }
}

#[derive(Clone, Copy, Debug, PartialEq)]
enum Ty {
    Small,
    Int,
    Big,
    Num4,
    Num2,
    Num20,
    Text,
    Var20,
    Var8,
    Bool,
    Date,
}

impl Ty {
    fn sql(self) -> &'static str {
        match self {
            Ty::Small => "smallint",
            Ty::Int => "integer",
            Ty::Big => "bigint",
            Ty::Num4 => "numeric(12,4)",
            Ty::Num2 => "numeric(12,2)",
            Ty::Num20 => "numeric(20,0)",
            Ty::Text => "text",
            Ty::Var20 => "varchar(20)",
            Ty::Var8 => "varchar(8)",
            Ty::Bool => "boolean",
            Ty::Date => "date",
        }
    }

    /// A value for row `g` (an SQL expression over `g`).
    fn value(self, salt: usize) -> String {
        match self {
            Ty::Small => format!("((g * {}) % 300)::smallint", salt + 3),
            Ty::Int => format!("((g * {}) % 1000)", salt + 7),
            Ty::Big => format!("(g * {})::bigint", salt + 11),
            Ty::Num4 | Ty::Num2 | Ty::Num20 => format!("(g + 0.{:04})", 1234 + salt * 1111 % 8765),
            Ty::Text => format!("'v{salt}-' || g"),
            Ty::Var20 | Ty::Var8 => format!("'s' || (g % {})", 40 + salt),
            Ty::Bool => "(g % 2 = 0)".into(),
            Ty::Date => "(date '2020-01-01' + g)".into(),
        }
    }

    /// A constant of the type, for a default.
    fn constant(self) -> &'static str {
        match self {
            Ty::Small | Ty::Int | Ty::Big => "5",
            Ty::Num4 | Ty::Num2 | Ty::Num20 => "1.5",
            Ty::Text | Ty::Var20 | Ty::Var8 => "'none'",
            Ty::Bool => "false",
            Ty::Date => "'2021-02-03'",
        }
    }

    fn numeric(self) -> bool {
        matches!(self, Ty::Small | Ty::Int | Ty::Big | Ty::Num4 | Ty::Num2 | Ty::Num20)
    }

    /// The new types a change may give a column of this type, with `using`
    /// where PostgreSQL has no assignment cast.
    fn targets(self) -> &'static [(Ty, Option<&'static str>)] {
        match self {
            Ty::Small => &[(Ty::Int, None), (Ty::Big, None), (Ty::Text, None)],
            Ty::Int => &[(Ty::Big, None), (Ty::Num4, None), (Ty::Text, None), (Ty::Small, None)],
            Ty::Big => &[(Ty::Num20, None), (Ty::Int, None)],
            Ty::Num4 => &[(Ty::Num2, None), (Ty::Num20, None), (Ty::Int, None)],
            Ty::Num2 | Ty::Num20 => &[(Ty::Num4, None), (Ty::Big, None)],
            Ty::Text => &[(Ty::Var20, None), (Ty::Var8, None)],
            Ty::Var20 => &[(Ty::Var8, None), (Ty::Text, None)],
            Ty::Var8 => &[(Ty::Var20, None), (Ty::Text, None)],
            Ty::Bool => &[(Ty::Text, None), (Ty::Int, Some("CASE WHEN {c} THEN 1 ELSE 0 END"))],
            Ty::Date => &[(Ty::Text, None)],
        }
    }
}

#[derive(Clone, Debug)]
struct Col {
    name: String,
    ty: Ty,
    not_null: bool,
    in_key: bool,
}

/// Which server the cases are for: DSQL takes no per-column COLLATE in DDL
/// (dsql-facts), so its tables are drawn without one.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Server {
    Postgres,
    Dsql,
}

/// A table `t` and its columns as the generator knows them.
fn table(draw: &mut Draw, server: Server) -> (String, Vec<Col>) {
    let palette = [Ty::Small, Ty::Int, Ty::Big, Ty::Num4, Ty::Num2, Ty::Text, Ty::Var20, Ty::Var8, Ty::Bool, Ty::Date];
    let count = 3 + draw.below(4);
    let mut cols = Vec::new();
    let mut defs = vec!["id bigint PRIMARY KEY".to_string()];
    let mut values = vec!["g".to_string()];
    for i in 0..count {
        let ty = *draw.pick(&palette);
        let name = if i == 1 && draw.chance(30) { format!("Col {i}") } else { format!("c{i}") };
        let not_null = draw.chance(30);
        let nulls = !not_null && draw.chance(40);
        let mut def = format!("{} {}", q(&name), ty.sql());
        if ty == Ty::Text && draw.chance(30) && server == Server::Postgres {
            def.push_str(" COLLATE \"C\"");
        }
        if not_null {
            def.push_str(" NOT NULL");
        }
        if draw.chance(30) {
            def.push_str(&format!(" DEFAULT {}", ty.constant()));
        }
        defs.push(def);
        let value = ty.value(i);
        values.push(if nulls { format!("CASE WHEN g % 7 = 3 THEN NULL ELSE {value} END") } else { value });
        cols.push(Col { name, ty, not_null, in_key: false });
    }
    // A generated column over an integer column (never changed itself).
    if let Some(source) = cols.iter().find(|c| matches!(c.ty, Ty::Int | Ty::Small)).filter(|_| draw.chance(30)) {
        defs.push(format!("twice bigint GENERATED ALWAYS AS ({} * 2) STORED", q(&source.name)));
    }
    let mut extra = vec![
        "CREATE TABLE p (id bigint PRIMARY KEY)".to_string(),
        "INSERT INTO p SELECT generate_series(0, 600)".to_string(),
    ];
    for (i, c) in cols.iter().enumerate() {
        let qc = q(&c.name);
        if c.ty.numeric() && draw.chance(30) {
            extra.push(format!("ALTER TABLE t ADD CONSTRAINT t_check_{i} CHECK ({qc} >= 0)"));
        }
        if c.ty == Ty::Text && draw.chance(40) {
            extra.push(format!("ALTER TABLE t ADD CONSTRAINT t_unique_{i} UNIQUE ({qc})"));
        }
        match draw.below(6) {
            0 => extra.push(format!("CREATE INDEX t_idx_{i} ON t ({qc})")),
            1 if matches!(c.ty, Ty::Text | Ty::Var20 | Ty::Var8) => {
                extra.push(format!("CREATE INDEX t_lower_{i} ON t (lower({qc}))"))
            }
            2 if c.ty.numeric() => extra.push(format!("CREATE INDEX t_part_{i} ON t ({qc}) WHERE {qc} > 10")),
            3 => extra.push(format!("CREATE INDEX t_pair_{i} ON t ({qc}, id)")),
            _ => {}
        }
        if draw.chance(15) {
            extra.push(format!("COMMENT ON COLUMN t.{qc} IS 'column {i}'"));
        }
    }
    if draw.chance(30) {
        extra.push("COMMENT ON TABLE t IS 'generated'".into());
    }
    let rows = 20 + draw.below(200);
    let inserted: Vec<String> = std::iter::once("id".to_string()).chain(cols.iter().map(|c| q(&c.name))).collect();
    let mut setup = format!(
        "CREATE TABLE t ({});\nINSERT INTO t ({}) SELECT {} FROM generate_series(1, {rows}) g;\n",
        defs.join(", "),
        inserted.join(", "),
        values.join(", ")
    );
    for statement in extra {
        setup.push_str(&statement);
        setup.push_str(";\n");
    }
    if cols.iter().any(|c| c.ty == Ty::Text) && draw.chance(15) {
        // A value no shorter type holds: narrowing must be refused.
        let c = cols.iter().find(|c| c.ty == Ty::Text).expect("checked");
        setup.push_str(&format!("UPDATE t SET {} = 'a value of twenty-six chars' WHERE id = 3;\n", q(&c.name)));
    }
    (setup, cols)
}

/// One to four changes to `cols`, as spec YAML lines.
fn changes(draw: &mut Draw, cols: &mut Vec<Col>) -> Vec<String> {
    let mut out = Vec::new();
    let mut identity = false;
    for n in 0..1 + draw.below(4) {
        if cols.is_empty() {
            break;
        }
        let at = draw.below(cols.len());
        let c = cols[at].clone();
        let name = serde_json::to_string(&c.name).unwrap();
        let line = match draw.below(10) {
            0 | 1 => {
                let (to, using) = *draw.pick(c.ty.targets());
                cols[at].ty = to;
                let using = using
                    .map(|u| format!(", using: {}", serde_json::to_string(&u.replace("{c}", &q(&c.name))).unwrap()));
                format!("alterColumn: {{column: {name}, type: \"{}\"{}}}", to.sql(), using.unwrap_or_default())
            }
            2 => {
                cols[at].not_null = !c.not_null;
                format!("alterColumn: {{column: {name}, notNull: {}}}", !c.not_null)
            }
            3 if draw.chance(50) => format!("alterColumn: {{column: {name}, default: {:?}}}", c.ty.constant()),
            3 => format!("alterColumn: {{column: {name}, dropDefault: true}}"),
            4 => {
                let ty = *draw.pick(&[Ty::Int, Ty::Text, Ty::Num2, Ty::Bool]);
                let added = format!("added_{n}");
                let line = match draw.below(3) {
                    0 => format!("addColumn: {{name: {added}, type: \"{}\"}}", ty.sql()),
                    1 => format!("addColumn: {{name: {added}, type: \"{}\", default: {:?}}}", ty.sql(), ty.constant()),
                    _ => format!(
                        "addColumn: {{name: {added}, type: \"{}\", notNull: true, default: {:?}}}",
                        ty.sql(),
                        ty.constant()
                    ),
                };
                cols.push(Col { name: added, ty, not_null: false, in_key: false });
                line
            }
            // The engine needs the key it goes through the rows by: a column
            // of the primary key is not dropped (ALTER would drop the key).
            5 if !c.in_key => {
                cols.remove(at);
                format!("dropColumn: {{name: {name}}}")
            }
            6 => {
                let to = format!("r{n}_{}", c.name.replace(' ', "_"));
                cols[at].name.clone_from(&to);
                format!("renameColumn: {{from: {name}, to: {to}}}")
            }
            7 if c.ty.numeric() => {
                let bound = *draw.pick(&[-5, 100]);
                let op = if bound < 0 { ">=" } else { "<" };
                let check = serde_json::to_string(&format!("{} {op} {bound}", q(&c.name))).unwrap();
                format!("addConstraint: {{name: t_added_check_{n}, check: {check}}}")
            }
            8 if draw.chance(50) => format!("addConstraint: {{name: t_added_unique_{n}, unique: [{name}]}}"),
            8 if matches!(c.ty, Ty::Int | Ty::Small | Ty::Big) => format!(
                "addConstraint: {{name: t_added_fk_{n}, foreignKey: {{columns: [{name}], references: {{table: p, columns: [id]}}}}}}"
            ),
            8 if !identity => {
                // The key changes: an identity on id would need it alone.
                identity = true;
                cols[at].not_null = true;
                cols[at].in_key = true;
                format!("setPrimaryKey: {{columns: [id, {name}]}}")
            }
            9 if !identity => {
                identity = true;
                let generation = if draw.chance(50) { "Always" } else { "ByDefault" };
                format!("addIdentity: {{column: id, generation: {generation}}}")
            }
            _ => format!("alterColumn: {{column: {name}, notNull: {}}}", c.not_null),
        };
        out.push(format!("- {line}"));
    }
    out
}

/// The `n`-th case of `seed`.
pub(super) fn case(seed: u64, n: u64, server: Server) -> Case {
    let mut draw = Draw(seed.wrapping_mul(1_000_003).wrapping_add(n));
    let (setup, mut cols) = table(&mut draw, server);
    let lines = changes(&mut draw, &mut cols);
    Case::new(&format!("g{n}"), &setup, &lines.join("\n"))
}

pub(super) fn env_number(name: &str, default: u64) -> u64 {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

const CATALOG_VACUUM: &str = "VACUUM pg_catalog.pg_attribute, pg_catalog.pg_class, pg_catalog.pg_depend, \
     pg_catalog.pg_type, pg_catalog.pg_constraint, pg_catalog.pg_index, pg_catalog.pg_attrdef, \
     pg_catalog.pg_shdepend, pg_catalog.pg_description, pg_catalog.pg_trigger";

/// Runs `cases` generated cases of `seed` for `server`, four at a time, each
/// by `differences` (its case number and case: what differs), and fails
/// naming every case that differs. The schemas a case leaves are `g<n>_*`,
/// dropped by `cleanup` when it passes, so the catalog stays small.
async fn run_generated<F, Fut>(server: Server, cases: u64, seed: u64, db_url: String, differences: F)
where
    F: Fn(u64, Case) -> Fut,
    Fut: std::future::Future<Output = Vec<String>> + Send + 'static,
{
    let mut running = tokio::task::JoinSet::new();
    let mut failures = Vec::new();
    // `IDMIG_ORACLE_ONLY=478,1339`: those cases alone, to look at what a long run found.
    let only: Vec<u64> = std::env::var("IDMIG_ORACLE_ONLY")
        .map(|v| v.split(',').filter_map(|n| n.trim().parse().ok()).collect())
        .unwrap_or_default();
    let numbers: Vec<u64> = if only.is_empty() { (0..cases).collect() } else { only };
    for n in numbers {
        if running.len() >= 4 {
            failures.extend(running.join_next().await.expect("running").expect("case task"));
        }
        if n > 0 && n % 500 == 0 {
            // A long run cut short still tells how far it came.
            eprintln!("{n} of {cases} generated cases ({server:?}) started, {} differ so far", failures.len());
        }
        if n > 0 && n % 100 == 0 {
            // Each case makes and drops dozens of tables; with autovacuum off
            // (as CI's server has it) the catalog's dead rows slow every
            // later statement tenfold within a few thousand cases.
            let client = crate::support::connect(&db_url).await;
            if let Err(e) = client.batch_execute(CATALOG_VACUUM).await {
                eprintln!("could not vacuum the catalog: {e}");
            }
        }
        let case = case(seed, n, server);
        let (setup, changes) = (case.setup.clone(), serde_json::to_string(&case.changes).unwrap());
        let found = differences(n, case);
        let db_url = db_url.clone();
        running.spawn(async move {
            let found = found.await;
            if found.is_empty() {
                let client = crate::support::connect(&db_url).await;
                let schemas = client
                    .query("SELECT nspname::text FROM pg_namespace WHERE nspname LIKE $1", &[&format!("g{n}\\_%")])
                    .await
                    .unwrap();
                for row in schemas {
                    let _ = client.batch_execute(&format!("DROP SCHEMA {} CASCADE", q(row.get(0)))).await;
                }
            }
            (!found.is_empty()).then(|| {
                let said = format!("case {n} of seed {seed}:\n{setup}\nchanges: {changes}\n{}", found.join("\n"));
                // Said at once too: a long run cut short still tells.
                eprintln!("{said}\n");
                said
            })
        });
    }
    while let Some(done) = running.join_next().await {
        failures.extend(done.expect("case task"));
    }
    let failed = failures.len();
    assert!(
        failed == 0,
        "{failed} of {cases} generated cases ({server:?}) differ from ALTER TABLE (IDMIG_ORACLE_SEED={seed}):\n\n{}",
        failures.join("\n\n")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn generated_tables_and_changes_come_out_as_alter_table_leaves_them() {
    let cases = env_number("IDMIG_ORACLE_CASES", 200);
    let seed = env_number("IDMIG_ORACLE_SEED", 32);
    let db = Arc::new(TestDb::new("oracle_generated").await);
    let url = db.url.clone();
    run_generated(Server::Postgres, cases, seed, url, move |n, case| {
        let db = db.clone();
        async move { differences(&db, &format!("g{n}"), &case).await }
    })
    .await;
}

/// The same generator through the DSQL stand-in, always in its strict mode
/// (what AWS does not document is refused): the engine with a DSQL target
/// against ALTER TABLE on a copy in the backing database. Named without
/// "dsql" so that the strict pass of `scripts/test` does not run it twice.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn generated_tables_through_the_strict_stand_in_come_out_as_alter_table_leaves_them() {
    let cases = env_number("IDMIG_ORACLE_STAND_IN_CASES", 200);
    let seed = env_number("IDMIG_ORACLE_SEED", 32);
    let s = Arc::new(StandIn::start("oracle_generated_stand_in", |c| c.strict_undocumented = true).await);
    let url = s.db.url.clone();
    let stand_in = s.clone();
    run_generated(Server::Dsql, cases, seed, url, move |n, case| {
        let s = stand_in.clone();
        async move { through_stand_in(&s, &format!("g{n}"), &case).await }
    })
    .await;
    let refused_documented = s.refused_documented();
    assert!(refused_documented.is_empty(), "the stand-in refused what AWS documents: {refused_documented:?}");
}
