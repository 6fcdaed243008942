//! Names of the new table's objects, derived from the source's. Pure.

use super::quotas::MAX_IDENTIFIER_BYTES;

/// A name for an object of the new table, derived from the source object's name:
/// `post_tag_pkey` on `post_tag` becomes `post_tag_new_pkey` on `post_tag_new`.
/// Kept within the identifier limit with a stable hash suffix when too long.
pub fn derived_name(original: &str, source_table: &str, new_table: &str) -> String {
    let candidate = match original.strip_prefix(source_table) {
        Some(rest) if !rest.is_empty() => format!("{new_table}{rest}"),
        _ => format!("{new_table}_{original}"),
    };
    fit_identifier(&candidate)
}

fn fit_identifier(name: &str) -> String {
    if name.len() <= MAX_IDENTIFIER_BYTES {
        return name.to_string();
    }
    let hash = fnv1a(name.as_bytes());
    let mut cut = MAX_IDENTIFIER_BYTES - 9;
    while !name.is_char_boundary(cut) {
        cut -= 1;
    }
    format!("{}_{:08x}", &name[..cut], hash as u32)
}

fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf29ce484222325u64, |h, b| (h ^ *b as u64).wrapping_mul(0x100000001b3))
}

/// The name of the primary key a rebuild's new table is created with: it
/// tells the new table from the original under either name, so it is the
/// new table's own, with a hash of the changes (an earlier migration's new
/// table, now the original, has `<shadow>_pkey` already).
pub fn new_table_key(shadow: &super::shape::TableName, changes: &[crate::api::changes::Change]) -> String {
    let text = serde_json::to_string(changes).unwrap_or_default();
    let hash = fnv1a(format!("{shadow} {text}").as_bytes()) as u32;
    fit_identifier(&format!("{}_{hash:08x}_pkey", shadow.name))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn derived_names_follow_the_table_and_fit_the_limit() {
        assert_eq!(derived_name("post_tag_pkey", "post_tag", "post_tag_new"), "post_tag_new_pkey");
        assert_eq!(derived_name("idx_post", "post_tag", "post_tag_new"), "post_tag_new_idx_post");
        let long = derived_name(&"x".repeat(60), "t", "t_new");
        assert_eq!(long.len(), MAX_IDENTIFIER_BYTES);
        assert_eq!(long, derived_name(&"x".repeat(60), "t", "t_new"), "stable");
        assert_ne!(long, derived_name(&format!("{}y", "x".repeat(59)), "t", "t_new"));
        let multibyte = derived_name(&"é".repeat(40), "t", "t_new");
        assert!(multibyte.len() <= MAX_IDENTIFIER_BYTES);
    }
}
