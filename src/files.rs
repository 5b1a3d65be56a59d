//! The names of a store's files.

/// The writer's lock file.
pub const LOCK_FILE: &str = "LOCK";

/// `{prefix}{id:016x}{suffix}`: how every numbered file of a store is named.
pub fn numbered_name(prefix: &str, id: u64, suffix: &str) -> String {
    format!("{prefix}{id:016x}{suffix}")
}

/// The id in a name made by [`numbered_name`] with this prefix and suffix: exactly 16 hex
/// digits between them.
pub fn parse_numbered_name(name: &str, prefix: &str, suffix: &str) -> Option<u64> {
    let hex = name.strip_prefix(prefix)?.strip_suffix(suffix)?;
    if hex.len() != 16 {
        return None;
    }
    u64::from_str_radix(hex, 16).ok()
}

/// The file name of table `id`.
pub fn table_file_name(id: u64) -> String {
    numbered_name("t-", id, ".sstbl")
}

/// Parses a table file name back to its id.
pub fn parse_table_file_name(name: &str) -> Option<u64> {
    parse_numbered_name(name, "t-", ".sstbl")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_names_round_trip() {
        assert_eq!(parse_table_file_name(&table_file_name(42)), Some(42));
        assert_eq!(parse_table_file_name("t-1.sstbl"), None);
        assert_eq!(parse_table_file_name("LOCK"), None);
    }
}
