//! Keys, segment refs and the LaunchDarkly context hash.

use crate::error::{Error, Result};
use base64::Engine as _;
use sha2::{Digest, Sha256};

/// The longest key accepted, in bytes.
pub const MAX_KEY_LEN: usize = 4096;
/// The longest segment ref, context kind or cursor accepted, in bytes.
pub const MAX_NAME_LEN: usize = 1024;

/// Checks that `key` is 1..=[`MAX_KEY_LEN`] bytes.
pub fn validate_key(key: &[u8]) -> Result<()> {
    if key.is_empty() || key.len() > MAX_KEY_LEN {
        return Err(Error::InvalidKey { len: key.len() });
    }
    Ok(())
}

/// Checks a segment ref: 1..=1024 bytes of UTF-8 with no control characters.
///
/// A ref is opaque (`beta-users.g3` by convention); one without `.g` is accepted as it is.
pub fn validate_ref(segment_ref: &str) -> Result<()> {
    validate_name("segment ref", segment_ref)
}

/// Checks a context kind: 1..=1024 bytes, no control characters.
pub fn validate_kind(kind: &str) -> Result<()> {
    validate_name("context kind", kind)
}

fn validate_name(what: &'static str, value: &str) -> Result<()> {
    if value.is_empty() {
        return Err(Error::InvalidArgument {
            what,
            detail: "must not be empty".into(),
        });
    }
    if value.len() > MAX_NAME_LEN {
        return Err(Error::InvalidArgument {
            what,
            detail: format!("{} bytes, the limit is {MAX_NAME_LEN}", value.len()),
        });
    }
    if value.chars().any(char::is_control) {
        return Err(Error::InvalidArgument {
            what,
            detail: format!("{value:?} contains a control character"),
        });
    }
    Ok(())
}

/// The LaunchDarkly context hash of a context key: standard padded base64 of the SHA-256 of
/// its UTF-8 bytes, 44 characters. This is the key form SDKs query a big-segment store with.
///
/// ```
/// assert_eq!(
///     segstore::context_hash("user-key"),
///     "CEXjZY7cHJG/ydFy7q4+YEFwVrG3/pkJwA4FAjrbfx0="
/// );
/// ```
pub fn context_hash(context_key: &str) -> String {
    let digest = Sha256::digest(context_key.as_bytes());
    base64::engine::general_purpose::STANDARD.encode(digest)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn context_hash_matches_the_contract_vectors() {
        let vectors = [
            ("user-key", "CEXjZY7cHJG/ydFy7q4+YEFwVrG3/pkJwA4FAjrbfx0="),
            ("user1", "CgQblGLKpKMbrDVn4Lbm/ZEAeH2yq0M9lvbReMq/zpA="),
            ("user2", "YCXRj+SKvUUWhSjxioLiZd2Y1CGnCEqgn2GzQXA5AaM="),
            ("user3", "WGD68CtrxiIrpaylI1YPDjZMzYtnvuSG/ov3wB1JLMs="),
        ];
        for (key, hash) in vectors {
            assert_eq!(context_hash(key), hash, "hash of {key}");
        }
    }

    #[test]
    fn key_length_limits() {
        assert!(validate_key(b"").is_err());
        assert!(validate_key(b"a").is_ok());
        assert!(validate_key(&[b'x'; MAX_KEY_LEN]).is_ok());
        assert!(matches!(
            validate_key(&[b'x'; MAX_KEY_LEN + 1]),
            Err(Error::InvalidKey { len: 4097 })
        ));
    }

    #[test]
    fn refs_are_checked() {
        assert!(validate_ref("beta.g1").is_ok());
        assert!(validate_ref("no-generation").is_ok());
        assert!(validate_ref("").is_err());
        assert!(validate_ref("a\nb").is_err());
    }
}
