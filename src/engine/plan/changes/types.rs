//! Column types as the planner compares them: spelled as `format_type`
//! prints them, and which changes PostgreSQL makes without rewriting the
//! table (binary-coercible, or a wider limit of the same type).

/// `varchar(20)` as `character varying(20)`, `int4` as `integer`, and so on,
/// so that a spec's spelling compares with the catalog's. Lower-cased words,
/// single spaces; what it does not know is kept as written.
pub fn normalize_type(written: &str) -> String {
    let lower = written.trim().to_ascii_lowercase();
    let (base, modifier) = match lower.find('(') {
        Some(at) => (lower[..at].trim(), lower[at..].replace(' ', "")),
        None => (lower.as_str(), String::new()),
    };
    let base = base.split_whitespace().collect::<Vec<_>>().join(" ");
    let base = match base.as_str() {
        "varchar" => "character varying",
        "char" | "bpchar" => "character",
        "int" | "int4" => "integer",
        "int8" => "bigint",
        "int2" => "smallint",
        "decimal" => "numeric",
        "float8" | "double" => "double precision",
        "float4" => "real",
        "bool" => "boolean",
        "timestamptz" => "timestamp with time zone",
        "timestamp" => "timestamp without time zone",
        other => other,
    };
    format!("{base}{modifier}")
}

/// `value` (an expression) converted to `data_type` (normalized) as an
/// assignment converts it, which is what `ALTER COLUMN ... TYPE` and an
/// INSERT do: a string longer than `character varying(n)` or `character(n)`
/// holds raises SQLSTATE 22001 (trailing spaces aside), where an explicit
/// cast would cut it without a word. Every other type converts the same
/// either way (numeric and time precision round in both), so the cast stays.
pub fn assignment_cast(value: &str, data_type: &str) -> String {
    // The length coercion functions take the typmod (n + 4) and whether the
    // cast is explicit; false is the assignment's rule.
    let limited = |prefix: &str| data_type.strip_prefix(prefix)?.strip_suffix(')')?.trim().parse::<u32>().ok();
    if let Some(n) = limited("character varying(") {
        return format!("pg_catalog.\"varchar\"(({value})::character varying, {}, false)", n + 4);
    }
    if let Some(n) = limited("character(") {
        return format!("pg_catalog.bpchar(({value})::pg_catalog.bpchar, {}, false)", n + 4);
    }
    format!("{value}::{data_type}")
}

/// The type's name and its modifiers: `numeric(12,2)` is ("numeric", [12, 2]).
fn parts(t: &str) -> Option<(&str, Vec<u32>)> {
    match t.find('(') {
        None => Some((t, Vec::new())),
        Some(at) => {
            let inner = t[at + 1..].strip_suffix(')')?;
            let mods = inner.split(',').map(|m| m.trim().parse().ok()).collect::<Option<Vec<u32>>>()?;
            Some((&t[..at], mods))
        }
    }
}

/// Whether PostgreSQL changes `from` to `to` without rewriting or scanning
/// the table: the same type, `varchar(n)` to a larger limit, no limit or
/// `text`, and `numeric(p,s)` to a larger precision with the same scale or to
/// plain `numeric`. Both are normalized.
pub fn changes_in_place(from: &str, to: &str) -> bool {
    if from == to {
        return true;
    }
    let (Some((from_base, from_mods)), Some((to_base, to_mods))) = (parts(from), parts(to)) else {
        return false;
    };
    match (from_base, to_base) {
        ("character varying", "text") => true,
        ("character varying", "character varying") => match (from_mods.as_slice(), to_mods.as_slice()) {
            (_, []) => true,
            ([n], [m]) => m >= n,
            _ => false,
        },
        ("numeric", "numeric") => match (from_mods.as_slice(), to_mods.as_slice()) {
            (_, []) => true,
            ([p, s], [p2, s2]) => p2 >= p && s2 == s,
            ([p], [p2]) => p2 >= p,
            _ => false,
        },
        _ => false,
    }
}

/// Whether every value of `from` converts to `to` by assignment without an
/// error, whatever the rows hold: a change in place, a wider integer, an
/// integer or a number into a `numeric` with room for its every digit, a
/// floating type from an integer or a `real`, and any type into unlimited
/// text (its output function never fails). Both are normalized. False
/// where unsure: the scan then reads the rows.
pub fn always_converts(from: &str, to: &str) -> bool {
    if changes_in_place(from, to) || matches!(to, "text" | "character varying") {
        return true;
    }
    let (Some((from_base, from_mods)), Some((to_base, to_mods))) = (parts(from), parts(to)) else {
        return false;
    };
    // The integer digits each integer type may need.
    let digits = |base: &str| match base {
        "smallint" => Some(5),
        "integer" => Some(10),
        "bigint" => Some(19),
        _ => None,
    };
    match (digits(from_base), to_base, to_mods.as_slice()) {
        (Some(d), _, []) if digits(to_base).is_some_and(|to| to >= d) => true,
        (Some(_), "numeric" | "double precision" | "real", []) => true,
        (Some(d), "numeric", [p, s]) => p - s >= d,
        (Some(d), "numeric", [p]) => *p >= d,
        (None, "numeric", [p2, s2]) if from_base == "numeric" => match from_mods.as_slice() {
            // Fewer decimals round, and a rounding can carry into one more integer digit.
            [p, s] => p2 - s2 >= p - s + u32::from(s2 < s),
            _ => false,
        },
        (None, "double precision", []) => from_base == "real",
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spellings_compare_with_the_catalogs() {
        assert_eq!(normalize_type("VARCHAR( 50 )"), "character varying(50)");
        assert_eq!(normalize_type("int"), "integer");
        assert_eq!(normalize_type("numeric(12, 2)"), "numeric(12,2)");
        assert_eq!(normalize_type("timestamptz"), "timestamp with time zone");
        assert_eq!(normalize_type("public.money_amount"), "public.money_amount");
    }

    #[test]
    fn a_shorter_string_type_is_assigned_never_cut() {
        assert_eq!(
            assignment_cast("\"code\"", "character varying(8)"),
            "pg_catalog.\"varchar\"((\"code\")::character varying, 12, false)"
        );
        assert_eq!(assignment_cast("(x)", "character(3)"), "pg_catalog.bpchar(((x))::pg_catalog.bpchar, 7, false)");
        assert_eq!(assignment_cast("(x)", "numeric(12,2)"), "(x)::numeric(12,2)");
        assert_eq!(assignment_cast("\"c\"", "character varying"), "\"c\"::character varying");
    }

    #[test]
    fn only_conversions_no_value_can_fail_skip_the_scan() {
        let ok = |a: &str, b: &str| always_converts(&normalize_type(a), &normalize_type(b));
        assert!(ok("integer", "bigint") && ok("smallint", "integer") && ok("integer", "numeric"));
        assert!(ok("integer", "numeric(12,2)"), "ten integer digits fit");
        assert!(!ok("integer", "numeric(11,2)"), "2147483647 needs ten");
        assert!(!ok("bigint", "integer") && !ok("bigint", "numeric(20,2)"));
        assert!(ok("numeric(12,4)", "numeric(14,4)") && ok("numeric(12,4)", "numeric(12,2)"));
        assert!(!ok("numeric(12,4)", "numeric(10,2)"), "99999999.9999 rounds up to 100000000.00");
        assert!(!ok("numeric", "numeric(12,2)") && !ok("numeric(12,2)", "integer"));
        assert!(ok("date", "text") && ok("jsonb", "varchar") && !ok("text", "varchar(8)") && !ok("text", "integer"));
        assert!(ok("real", "double precision") && !ok("double precision", "real"));
        assert!(!ok("date", "timestamp"), "a date past 294276 AD has no timestamp");
    }

    #[test]
    fn only_changes_that_keep_every_stored_value_are_in_place() {
        let n = |a: &str, b: &str| changes_in_place(&normalize_type(a), &normalize_type(b));
        assert!(n("varchar(20)", "varchar(50)"));
        assert!(n("varchar(20)", "text"));
        assert!(n("varchar(20)", "varchar"));
        assert!(!n("varchar(50)", "varchar(20)"), "a shorter limit checks every row");
        assert!(!n("text", "varchar(50)"));
        assert!(n("numeric(10,2)", "numeric(12,2)"));
        assert!(n("numeric(10,2)", "numeric"));
        assert!(!n("numeric(10,2)", "numeric(12,3)"), "another scale rewrites");
        assert!(!n("integer", "bigint"), "a wider integer rewrites the table");
        assert!(!n("integer", "numeric(12,2)"));
        assert!(n("text", "text"));
    }
}
