//! The names of a store's files.

/// The writer's lock file.
pub const LOCK_FILE: &str = "LOCK";

/// The file name of table `id`.
pub fn table_file_name(id: u64) -> String {
    format!("t-{id:016x}.sstbl")
}

/// Parses a table file name back to its id.
pub fn parse_table_file_name(name: &str) -> Option<u64> {
    let hex = name.strip_prefix("t-")?.strip_suffix(".sstbl")?;
    if hex.len() != 16 {
        return None;
    }
    u64::from_str_radix(hex, 16).ok()
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
