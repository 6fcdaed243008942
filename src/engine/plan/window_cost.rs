//! How long the cut-over window will keep the table renamed away, said
//! before anything starts (`plan`, `status.plan.windowEstimateMillis`, a
//! Warning event when long). Pure.
//!
//! On PostgreSQL the window copies only the rows written since the last pass
//! (the change capture, or a change tracking column), so its length follows
//! the writes, not the table. On DSQL, which has no triggers, it does so only
//! with a change tracking column; without one it re-reads every row of the
//! renamed table, in `parallelism` chunks at once.

use super::shape::TableShape;
use crate::db::Dialect;

/// Milliseconds the window takes per million rows when it re-reads the
/// table with 4 workers (docs/benchmarks.md): PostgreSQL 160 ms, DSQL
/// through the stand-in 1,100 ms (the real service's round trips add more).
fn reread_millis_per_million(dialect: Dialect) -> f64 {
    match dialect {
        Dialect::Postgres => 160.0,
        Dialect::Dsql => 1_100.0,
    }
}

/// A window over this is worth a Warning event before the migration starts.
pub const SLOW_WINDOW_MILLIS: i64 = 2_000;

#[derive(Clone, Debug, PartialEq)]
pub enum WindowCost {
    /// The window copies the rows written since the last pass, found by `how`.
    Writes { how: &'static str },
    /// The window re-reads all `rows`: about `millis`.
    EveryRow { rows: i64, millis: i64 },
}

impl WindowCost {
    /// The estimate, when it depends on the table's size.
    pub fn millis(&self) -> Option<i64> {
        match self {
            WindowCost::Writes { .. } => None,
            WindowCost::EveryRow { millis, .. } => Some(*millis),
        }
    }

    pub fn describe(&self) -> String {
        match self {
            WindowCost::Writes { how } => {
                format!("follows the writes since the last pass ({how}), not the table's size")
            }
            WindowCost::EveryRow { rows, millis } => {
                format!(
                    "about {:.1} s: every one of {rows} rows re-read with the table renamed away",
                    *millis as f64 / 1000.0
                )
            }
        }
    }
}

/// The window of a migration of `rows` rows on `dialect`, copying with
/// `parallelism` workers, with or without a change tracking column.
pub fn window_cost(dialect: Dialect, rows: i64, parallelism: usize, tracking: bool) -> WindowCost {
    match (tracking, dialect) {
        (true, _) => WindowCost::Writes { how: "spec.copy.changeTrackingColumn" },
        (false, Dialect::Postgres) => WindowCost::Writes { how: "the change capture's trigger" },
        (false, Dialect::Dsql) => {
            let per_row = reread_millis_per_million(dialect) / 1_000_000.0 * 4.0 / parallelism.max(1) as f64;
            WindowCost::EveryRow { rows, millis: (rows.max(0) as f64 * per_row).round() as i64 }
        }
    }
}

/// Columns a change tracking column could be: `timestamptz` columns whose
/// name says every write stamps them (`updated_at`, `modified`, ...).
pub fn tracking_candidates(shape: &TableShape) -> Vec<String> {
    shape
        .columns
        .iter()
        .filter(|c| c.data_type == "timestamp with time zone")
        .filter(|c| {
            let name = c.name.to_ascii_lowercase();
            ["updated", "modified", "changed", "touched", "last_"].iter().any(|w| name.contains(w))
        })
        .map(|c| c.name.clone())
        .collect()
}

/// What to tell a person before a window over [`SLOW_WINDOW_MILLIS`]; None
/// for a shorter one. `rebuild`: a TableMigration's rebuild, which cannot
/// use a change tracking column.
pub fn slow_window(cost: &WindowCost, shape: &TableShape, rebuild: bool) -> Option<String> {
    let millis = cost.millis().filter(|m| *m > SLOW_WINDOW_MILLIS)?;
    let advice = match (rebuild, tracking_candidates(shape).first()) {
        (true, _) => "a rebuild cannot use a change tracking column yet: cut over when writes are few \
                      (spec.cutover.window), or stop the writers around it (spec.cutover.quiesce)"
            .to_string(),
        (false, Some(column)) => format!(
            "set spec.copy.changeTrackingColumn: {column} (if every write stamps it) and the window copies only \
             the rows written since the last pass"
        ),
        (false, None) => "a timestamptz column that every write stamps (an updated_at), named in \
                          spec.copy.changeTrackingColumn, makes the window copy only the rows written since the last pass"
            .to_string(),
    };
    Some(format!(
        "the cut-over window will keep the table renamed away for about {:.1} s (writers get errors meanwhile): \
         DSQL has no triggers, so it re-reads every row; {advice}",
        millis as f64 / 1000.0
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::testing::column;

    fn with(columns: &[(&str, &str)]) -> TableShape {
        TableShape { columns: columns.iter().map(|(n, t)| column(n, t, false)).collect(), ..Default::default() }
    }

    #[test]
    fn the_window_follows_the_writes_where_they_are_known_and_the_rows_where_not() {
        assert_eq!(window_cost(Dialect::Postgres, 10_000_000, 4, false).millis(), None, "the capture");
        assert_eq!(window_cost(Dialect::Dsql, 10_000_000, 4, true).millis(), None, "a tracking column");
        assert_eq!(window_cost(Dialect::Dsql, 1_000_000, 4, false).millis(), Some(1_100));
        assert_eq!(window_cost(Dialect::Dsql, 10_000_000, 8, false).millis(), Some(5_500), "more workers, less time");
    }

    #[test]
    fn a_long_window_names_the_column_that_would_make_it_short() {
        let shape = with(&[
            ("id", "bigint"),
            ("created_at", "timestamp with time zone"),
            ("updated_at", "timestamp with time zone"),
        ]);
        let long = window_cost(Dialect::Dsql, 10_000_000, 4, false);
        let said = slow_window(&long, &shape, false).unwrap();
        assert!(said.contains("about 11.0 s") && said.contains("changeTrackingColumn: updated_at"), "{said}");
        assert!(
            slow_window(&long, &shape, true).unwrap().contains("spec.cutover.quiesce"),
            "a rebuild has no column option"
        );
        assert!(slow_window(&long, &with(&[("id", "bigint")]), false).unwrap().contains("an updated_at"));
        assert_eq!(
            slow_window(&window_cost(Dialect::Dsql, 1_000_000, 4, false), &shape, false),
            None,
            "1.1 s is short"
        );
        assert_eq!(slow_window(&window_cost(Dialect::Postgres, 100_000_000, 4, false), &shape, false), None);
    }
}
