//! The files of a versioned migration set as each tool names and marks
//! them: each file's version, description and the part that migrates up,
//! with the line that part starts on (so errors name file and line). Pure.

use std::cmp::Ordering;

use sha2::{Digest, Sha256};

use crate::api::schema::Format;

/// A file as read from a directory, a ConfigMap key or an inline entry.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SourceFile {
    pub name: String,
    pub text: String,
}

/// A version: compared by its numeric parts (`1.10` after `1.9`), then as text.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Version {
    pub text: String,
    parts: Vec<u128>,
}

impl Version {
    pub fn new(text: &str) -> Self {
        let parts =
            text.split(['.', '_']).map(|p| p.parse::<u128>().ok()).collect::<Option<Vec<u128>>>().unwrap_or_default();
        Self { text: text.to_string(), parts }
    }
}

impl Version {
    /// A version of numbers (`1.2`, `20240101`), as opposed to a name.
    pub fn is_numbered(&self) -> bool {
        !self.parts.is_empty()
    }
}

impl Ord for Version {
    fn cmp(&self, other: &Self) -> Ordering {
        match (self.parts.is_empty(), other.parts.is_empty()) {
            (false, false) => {
                let len = self.parts.len().max(other.parts.len());
                let pad = |p: &[u128]| (0..len).map(|i| p.get(i).copied().unwrap_or(0)).collect::<Vec<_>>();
                pad(&self.parts).cmp(&pad(&other.parts)).then_with(|| self.text.cmp(&other.text))
            }
            // Numbered versions come before named ones.
            (false, true) => Ordering::Less,
            (true, false) => Ordering::Greater,
            (true, true) => self.text.cmp(&other.text),
        }
    }
}

impl PartialOrd for Version {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl std::fmt::Display for Version {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.text)
    }
}

/// One migration: the part of its file that migrates up.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VersionedFile {
    pub version: Version,
    pub description: String,
    pub file: String,
    pub sql: String,
    /// The line of the file on which `sql` starts (1-based).
    pub first_line: usize,
    /// SHA-256 of `sql`, hex: an applied file whose checksum changed drifted.
    pub checksum: String,
    /// Flyway's `R__` files: applied again whenever their checksum changes.
    pub repeatable: bool,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum FilesError {
    #[error("{file}: not a {format:?} migration name ({expected})")]
    Name { file: String, format: Format, expected: &'static str },
    #[error("{file}: no `{marker}` line: the tool would run nothing of it")]
    NoUpMarker { file: String, marker: &'static str },
    #[error("version {version} is given by both {first} and {second}")]
    Duplicate { version: String, first: String, second: String },
    #[error("no migration files (.sql) found")]
    Empty,
}

/// Tells the format from the names and markers: Flyway's `V1__`, then
/// golang-migrate's `.up.sql`, goose's and dbmate's markers, else plain.
pub fn detect(files: &[SourceFile]) -> Format {
    let sql = || files.iter().filter(|f| f.name.ends_with(".sql"));
    if sql().any(|f| flyway_name(&f.name).is_some()) {
        Format::Flyway
    } else if sql().any(|f| f.name.ends_with(".up.sql")) {
        Format::GolangMigrate
    } else if sql().any(|f| marker_line(&f.text, "-- +goose up").is_some()) {
        Format::Goose
    } else if sql().any(|f| marker_line(&f.text, "-- migrate:up").is_some()) {
        Format::Dbmate
    } else {
        Format::Plain
    }
}

/// The migrations of `files` in `format` (`Auto`: detected), in version
/// order, repeatable ones last. Files of no concern (a `.down.sql`, a
/// README, Flyway's undo `U1__`) are left out.
pub fn read(files: &[SourceFile], format: Format) -> Result<Vec<VersionedFile>, FilesError> {
    let format = if format == Format::Auto { detect(files) } else { format };
    let mut out = Vec::new();
    for f in files.iter().filter(|f| f.name.ends_with(".sql")) {
        if let Some(m) = read_one(f, format)? {
            out.push(m);
        }
    }
    if out.is_empty() {
        return Err(FilesError::Empty);
    }
    out.sort_by(|a, b| a.repeatable.cmp(&b.repeatable).then_with(|| a.version.cmp(&b.version)));
    for pair in out.windows(2) {
        if !pair[0].repeatable && pair[0].version.text == pair[1].version.text {
            return Err(FilesError::Duplicate {
                version: pair[0].version.text.clone(),
                first: pair[0].file.clone(),
                second: pair[1].file.clone(),
            });
        }
    }
    Ok(out)
}

fn read_one(f: &SourceFile, format: Format) -> Result<Option<VersionedFile>, FilesError> {
    let bad = |expected| FilesError::Name { file: f.name.clone(), format, expected };
    let stem = f.name.trim_end_matches(".sql");
    let (version, description, repeatable, (sql, first_line)) = match format {
        Format::Flyway => {
            if f.name.starts_with('U') && f.name.contains("__") {
                return Ok(None);
            }
            let (version, description, repeatable) =
                flyway_name(&f.name).ok_or_else(|| bad("V<version>__<description>.sql or R__<description>.sql"))?;
            (version, description, repeatable, (f.text.clone(), 1))
        }
        Format::GolangMigrate => {
            if f.name.ends_with(".down.sql") {
                return Ok(None);
            }
            let stem = f.name.strip_suffix(".up.sql").ok_or_else(|| bad("<version>_<title>.up.sql"))?;
            let (version, title) = numbered(stem).ok_or_else(|| bad("<version>_<title>.up.sql"))?;
            (version, title, false, (f.text.clone(), 1))
        }
        Format::Goose => {
            let (version, title) = numbered(stem).ok_or_else(|| bad("<version>_<name>.sql"))?;
            let part = marked(&f.text, "-- +goose up", "-- +goose down")
                .ok_or(FilesError::NoUpMarker { file: f.name.clone(), marker: "-- +goose Up" })?;
            (version, title, false, part)
        }
        Format::Dbmate => {
            let (version, title) = numbered(stem).ok_or_else(|| bad("<version>_<name>.sql"))?;
            let part = marked(&f.text, "-- migrate:up", "-- migrate:down")
                .ok_or(FilesError::NoUpMarker { file: f.name.clone(), marker: "-- migrate:up" })?;
            (version, title, false, part)
        }
        Format::Plain | Format::Auto => {
            let (version, title) = numbered(stem).unwrap_or_else(|| (stem.to_string(), stem.to_string()));
            (version, title, false, (f.text.clone(), 1))
        }
    };
    Ok(Some(VersionedFile {
        version: Version::new(&version),
        description,
        file: f.name.clone(),
        checksum: checksum(&sql),
        sql,
        first_line,
        repeatable,
    }))
}

/// `spec.source.migrations`, in version order: each names its own version.
pub fn inline(migrations: &[crate::api::schema::InlineMigration]) -> Vec<VersionedFile> {
    let mut out: Vec<VersionedFile> = migrations
        .iter()
        .enumerate()
        .map(|(i, m)| VersionedFile {
            version: Version::new(&m.version),
            description: m.description.clone(),
            file: format!("spec.source.migrations[{i}]"),
            checksum: checksum(&m.sql),
            sql: m.sql.clone(),
            first_line: 1,
            repeatable: false,
        })
        .collect();
    out.sort_by(|a, b| a.version.cmp(&b.version));
    out
}

/// SHA-256 of the text with line ends made `\n`, hex.
pub fn checksum(sql: &str) -> String {
    let normal = sql.replace("\r\n", "\n");
    Sha256::digest(normal.as_bytes()).iter().map(|b| format!("{b:02x}")).collect()
}

/// `V1_2__add_status.sql` → ("1.2", "add status", false); `R__views.sql` →
/// ("views", "views", true).
fn flyway_name(name: &str) -> Option<(String, String, bool)> {
    let stem = name.strip_suffix(".sql")?;
    let (head, description) = stem.split_once("__")?;
    let description = description.replace('_', " ");
    if head == "R" {
        return Some((description.clone(), description, true));
    }
    let version = head.strip_prefix('V')?;
    let ok = !version.is_empty() && version.chars().all(|c| c.is_ascii_digit() || c == '.' || c == '_');
    ok.then(|| (version.replace('_', "."), description, false))
}

/// `0003_add_status` → ("0003", "add status").
fn numbered(stem: &str) -> Option<(String, String)> {
    let digits: String = stem.chars().take_while(char::is_ascii_digit).collect();
    if digits.is_empty() {
        return None;
    }
    let rest = stem[digits.len()..].trim_start_matches(['_', '-', '.']);
    Some((digits, rest.replace('_', " ")))
}

/// The line (0-based) that is `marker`, compared case-insensitively with
/// runs of spaces as one (`--  +goose   Up`).
fn marker_line(text: &str, marker: &str) -> Option<usize> {
    text.lines().position(|l| is_marker(l, marker))
}

fn is_marker(line: &str, marker: &str) -> bool {
    let words: Vec<String> = line.split_whitespace().map(str::to_ascii_lowercase).collect();
    let wanted: Vec<&str> = marker.split_whitespace().collect();
    // Options may follow the marker (`-- migrate:up transaction:false`).
    words.len() >= wanted.len() && words.iter().zip(&wanted).all(|(w, m)| w == m)
}

/// The text between the `up` marker line and the `down` marker line (or the
/// end), and the 1-based line it starts on.
fn marked(text: &str, up: &str, down: &str) -> Option<(String, usize)> {
    let lines: Vec<&str> = text.split_inclusive('\n').collect();
    let start = lines.iter().position(|l| is_marker(l, up))? + 1;
    let end = lines[start..].iter().position(|l| is_marker(l, down)).map_or(lines.len(), |i| start + i);
    Some((lines[start..end].concat(), start + 1))
}

#[cfg(test)]
mod tests;
