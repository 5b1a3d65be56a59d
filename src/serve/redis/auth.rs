//! Who may connect: passwords and named users, each read-only or read-write.
//!
//! A password file holds either one line, the password of the `default` user (read-write),
//! or one user a line as `NAME rw|ro PASSWORD` (the password is the rest of the line). Blank
//! lines and lines starting with `#` are skipped. Only SHA-256 digests are kept in memory,
//! and a password is compared by digest in constant time.

use sha2::{Digest, Sha256};
use std::fmt;

/// What a user may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// Reads only: every write command is refused with `NOPERM`.
    ReadOnly,
    /// Reads and writes.
    ReadWrite,
}

/// One user.
#[derive(Clone)]
pub struct User {
    /// The name (`default` for a bare password).
    pub name: String,
    /// What it may do.
    pub access: Access,
    digest: [u8; 32],
}

impl fmt::Debug for User {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("User")
            .field("name", &self.name)
            .field("access", &self.access)
            .finish_non_exhaustive()
    }
}

/// The users of a server. Empty: no password, every connection reads and writes.
#[derive(Debug, Clone, Default)]
pub struct Users {
    users: Vec<User>,
}

/// The name of the user a bare password belongs to.
pub const DEFAULT_USER: &str = "default";

fn digest(password: &[u8]) -> [u8; 32] {
    Sha256::digest(password).into()
}

/// Equality of two digests in time independent of where they differ.
fn same_digest(a: &[u8; 32], b: &[u8; 32]) -> bool {
    let diff = a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y));
    // black_box keeps the compiler from turning the fold into an early-exit comparison.
    std::hint::black_box(diff) == 0
}

impl Users {
    /// No password.
    pub fn none() -> Users {
        Users::default()
    }

    /// One password for the `default` user, read-write.
    pub fn password(password: &str) -> Users {
        Users {
            users: vec![User {
                name: DEFAULT_USER.to_owned(),
                access: Access::ReadWrite,
                digest: digest(password.as_bytes()),
            }],
        }
    }

    /// Parses a password file's text (see the module docs). The error names the line at
    /// fault, never its content.
    pub fn parse(text: &str) -> Result<Users, String> {
        let lines: Vec<(usize, &str)> = text
            .lines()
            .enumerate()
            .map(|(i, l)| (i + 1, l.trim()))
            .filter(|(_, l)| !l.is_empty() && !l.starts_with('#'))
            .collect();
        if let [(_, only)] = lines.as_slice() {
            if !only.contains(char::is_whitespace) {
                return Ok(Users::password(only));
            }
        }
        let mut users: Vec<User> = Vec::new();
        for (number, line) in lines {
            let mut fields = line.splitn(3, char::is_whitespace);
            let (Some(name), Some(access), Some(password)) =
                (fields.next(), fields.next(), fields.next())
            else {
                return Err(format!(
                    "line {number}: expected `NAME rw|ro PASSWORD` (or a file of one line, the password)"
                ));
            };
            let access = match access {
                "rw" => Access::ReadWrite,
                "ro" => Access::ReadOnly,
                _ => return Err(format!("line {number}: access must be `rw` or `ro`")),
            };
            let password = password.trim();
            if password.is_empty() {
                return Err(format!("line {number}: empty password"));
            }
            if users.iter().any(|u| u.name == name) {
                return Err(format!("line {number}: user {name:?} named twice"));
            }
            users.push(User {
                name: name.to_owned(),
                access,
                digest: digest(password.as_bytes()),
            });
        }
        if users.is_empty() {
            return Err("no password in the file".to_owned());
        }
        Ok(Users { users })
    }

    /// True when connections must authenticate.
    pub fn required(&self) -> bool {
        !self.users.is_empty()
    }

    /// The user `name` if `password` is theirs.
    pub fn check(&self, name: &str, password: &[u8]) -> Option<&User> {
        let given = digest(password);
        // Every user's digest is compared, so the time does not tell which names exist.
        let mut found = None;
        for user in &self.users {
            if same_digest(&user.digest, &given) && user.name == name {
                found = Some(user);
            }
        }
        found
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bare_password_or_named_users() {
        let one = Users::parse("# the writers' password\n  s3cret \n").unwrap();
        assert_eq!(
            one.check(DEFAULT_USER, b"s3cret").map(|u| u.access),
            Some(Access::ReadWrite)
        );
        assert!(one.check(DEFAULT_USER, b"s3cre").is_none());
        assert!(one.check("relay", b"s3cret").is_none());

        let many = Users::parse("relay rw pass word\nsdk ro other\n").unwrap();
        assert_eq!(
            many.check("relay", b"pass word").map(|u| u.access),
            Some(Access::ReadWrite)
        );
        assert_eq!(
            many.check("sdk", b"other").map(|u| u.access),
            Some(Access::ReadOnly)
        );
        assert!(many.check("sdk", b"pass word").is_none());
        assert!(many.check(DEFAULT_USER, b"other").is_none());

        for bad in [
            "",
            "# only a comment\n",
            "a rw\n",
            "a rx p\nb ro q\n",
            "a rw p\na ro q\n",
        ] {
            assert!(Users::parse(bad).is_err(), "{bad:?}");
        }
        let err = Users::parse("a rx topsecret\n").unwrap_err();
        assert!(
            err.starts_with("line 1") && !err.contains("topsecret"),
            "{err}"
        );
        assert!(!Users::none().required());
        let debug = format!("{:?}", Users::password("hunter2"));
        assert!(!debug.contains("hunter2"), "{debug}");
    }
}
