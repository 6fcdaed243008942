//! What a table carries besides its rows and columns: owner, privileges,
//! comments, storage parameters, replica identity, statistics, persistence,
//! row-level security, and the objects of others bound to it. Plain data, as
//! the catalog describes it.

/// One privilege of one role (None: PUBLIC), on the table or one column.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Grant {
    pub column: Option<String>,
    pub grantee: Option<String>,
    pub privilege: String,
    pub grantable: bool,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ReplicaIdentity {
    Default,
    Nothing,
    Full,
    /// `USING INDEX` of the source index of this name.
    Index(String),
}

/// A row-level security policy, as the catalog prints it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Policy {
    pub name: String,
    pub permissive: bool,
    /// `ALL`, `SELECT`, `INSERT`, `UPDATE` or `DELETE`.
    pub command: String,
    /// Role names; empty for PUBLIC.
    pub roles: Vec<String>,
    pub using: Option<String>,
    pub check: Option<String>,
}

/// An extended statistics object: its name and what `pg_get_statisticsobjdef`
/// prints between the name and `FROM` (`(ndistinct) ON a, b`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ExtendedStatistics {
    pub name: String,
    pub definition: String,
}

/// Everything besides rows that the new table must carry.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Fidelity {
    pub owner: String,
    /// The role the engine connects as (the shadow table's owner when created).
    pub connected_as: String,
    /// Table and column privileges; None while the table has its default
    /// privileges (no GRANT or REVOKE ever ran on it).
    pub grants: Option<Vec<Grant>>,
    pub comment: Option<String>,
    /// `(column, comment)`.
    pub column_comments: Vec<(String, String)>,
    /// `(constraint, comment)`.
    pub constraint_comments: Vec<(String, String)>,
    /// `(index, comment)` of the secondary indexes.
    pub index_comments: Vec<(String, String)>,
    /// `reloptions`: `fillfactor=70`, ...
    pub storage: Vec<String>,
    pub replica_identity: ReplicaIdentity,
    /// `(column, target)` for columns with a statistics target of their own.
    pub statistics_targets: Vec<(String, i32)>,
    pub extended_statistics: Vec<ExtendedStatistics>,
    pub unlogged: bool,
    pub row_security: bool,
    pub force_row_security: bool,
    pub policies: Vec<Policy>,
    /// Objects of other tables or of the schema bound to this table's OID
    /// (functions, rules, policies elsewhere, publications): they would keep
    /// pointing at the old table, and writes through them would be lost.
    pub dependents: Vec<String>,
    /// Facts the server would not give (comments, statistics, privileges).
    pub unread: Vec<Unread>,
}

impl Default for Fidelity {
    fn default() -> Self {
        Self {
            owner: String::new(),
            connected_as: String::new(),
            grants: None,
            comment: None,
            column_comments: Vec::new(),
            constraint_comments: Vec::new(),
            index_comments: Vec::new(),
            storage: Vec::new(),
            replica_identity: ReplicaIdentity::Default,
            statistics_targets: Vec::new(),
            extended_statistics: Vec::new(),
            unlogged: false,
            row_security: false,
            force_row_security: false,
            policies: Vec::new(),
            dependents: Vec::new(),
            unread: Vec::new(),
        }
    }
}

/// A fact about the table the catalog would not give: the server lacks a
/// catalog or function that PostgreSQL has (DSQL does not list them all).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Unread {
    pub fact: Fact,
    /// The server's answer, `SQLSTATE: message`.
    pub error: String,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fact {
    Triggers,
    DependentViews,
    Inheritance,
    Comments,
    ExtendedStatistics,
    Privileges,
}

/// SQLSTATEs that say a catalog, function or feature is absent: undefined
/// table, undefined function, feature not supported.
pub fn absent_catalog(sqlstate: Option<&str>) -> bool {
    matches!(sqlstate, Some("42P01" | "42883" | "0A000"))
}
