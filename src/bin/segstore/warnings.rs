//! Warnings for likely mistakes. Each one is a line on stderr (see [`warn`]) and never
//! changes what a command does or its exit code.

use crate::common::warn;
use segstore::table::is_hash_key;
use segstore::{List, Snapshot};

/// Keys read from the start of a list to tell what it holds.
const STYLE_SAMPLE: usize = 32;
/// Non-empty lists looked at to tell what a store holds.
const STORE_SAMPLE_LISTS: usize = 16;

/// What the keys of a list look like.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyStyle {
    /// LaunchDarkly context hashes (44-character base64 of 32 bytes), what the SDKs query.
    Hashes,
    /// Anything else: raw context keys.
    Raw,
}

impl KeyStyle {
    /// The style of one key.
    pub fn of(key: &[u8]) -> KeyStyle {
        if is_hash_key(key) {
            KeyStyle::Hashes
        } else {
            KeyStyle::Raw
        }
    }

    fn describe(self) -> &'static str {
        match self {
            KeyStyle::Hashes => "context hashes",
            KeyStyle::Raw => "raw keys",
        }
    }
}

/// True when `segment_ref` ends in `.gN` (N decimal digits), the form the SDKs query.
fn has_generation_suffix(segment_ref: &str) -> bool {
    segment_ref.rsplit_once(".g").is_some_and(|(key, digits)| {
        !key.is_empty() && !digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit())
    })
}

/// Warns about a segment ref that the SDKs would never query: one without a `.gN`
/// generation suffix, or one with white space in it.
pub fn check_ref(segment_ref: &str) {
    if segment_ref.chars().any(char::is_whitespace) {
        warn(format_args!(
            "segment ref {segment_ref:?} contains white space; LaunchDarkly segment keys never do \
             (a quoting mistake?)"
        ));
    }
    if !has_generation_suffix(segment_ref) {
        // The example is quoted like the ref, so no control character reaches the terminal.
        let example = format!("{segment_ref}.g1");
        warn(format_args!(
            "segment ref {segment_ref:?} has no `.gN` generation suffix (e.g. {example:?}); \
             the SDKs only query refs of the form KEY.gN"
        ));
    }
}

/// What one list holds, judged from its first keys: `None` for an empty or unknown list, or
/// one whose first keys mix both styles.
pub fn list_style(snapshot: &Snapshot, segment: &str, list: List) -> Option<KeyStyle> {
    let keys = snapshot.export(segment, list).ok()?;
    let mut style = None;
    for key in keys.take(STYLE_SAMPLE) {
        let this = KeyStyle::of(&key);
        match style {
            None => style = Some(this),
            Some(seen) if seen != this => return None,
            Some(_) => {}
        }
    }
    style
}

/// True when the store's segments hold context hashes: every non-empty list looked at (the
/// first [`STORE_SAMPLE_LISTS`] in ref order) holds hashes, and there is at least one.
pub fn store_holds_hashes(snapshot: &Snapshot) -> bool {
    let mut seen = 0;
    for info in snapshot.segments() {
        for list in List::BOTH {
            let len = match list {
                List::Included => info.included,
                List::Excluded => info.excluded,
            };
            if len == 0 {
                continue;
            }
            if list_style(snapshot, &info.segment, list) != Some(KeyStyle::Hashes) {
                return false;
            }
            seen += 1;
            if seen >= STORE_SAMPLE_LISTS {
                return true;
            }
        }
    }
    seen > 0
}

/// Warns that a lookup key given raw may be meant as a context key: the store holds hashes,
/// `--hash-key` was not given and the key is not a hash itself.
pub fn check_lookup_key(snapshot: &Snapshot, key: &[u8], hash_key: bool) {
    if !hash_key && KeyStyle::of(key) == KeyStyle::Raw && store_holds_hashes(snapshot) {
        warn(format_args!(
            "the store's segments hold context hashes, but {:?} is not one; pass --hash-key to \
             look up a raw context key",
            String::from_utf8_lossy(key)
        ));
    }
}

/// Warns when keys of one style are merged into a list that holds the other.
pub fn mixed_keys(segment: &str, list: List, adding: KeyStyle, holds: KeyStyle) {
    let hint = match adding {
        KeyStyle::Raw => "; did you mean --hash-keys?",
        KeyStyle::Hashes => {
            "; the SDKs would look these up by hash, and the list's raw keys never match"
        }
    };
    warn(format_args!(
        "adding {} to the {} list of {segment:?}, which holds {}{hint}",
        adding.describe(),
        list.name(),
        holds.describe()
    ));
}

#[cfg(test)]
mod tests {
    use super::has_generation_suffix;

    #[test]
    fn generation_suffix() {
        assert!(has_generation_suffix("beta.g3"));
        assert!(has_generation_suffix("a.b.g10"));
        assert!(!has_generation_suffix("beta"));
        assert!(!has_generation_suffix("beta.g"));
        assert!(!has_generation_suffix(".g1"));
        assert!(!has_generation_suffix("beta.g1x"));
    }
}
