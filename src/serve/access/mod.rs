//! Access tokens for the HTTP front door: how they are made, kept (hashed) and checked, and
//! the role policies that say what a token may do.
//!
//! - [`policy`]: [`Policy`], LaunchDarkly's role-statement JSON form, and the built-in
//!   [`Role`]s; [`Policy::allows`] answers "may this token do `action` on this segment?".
//! - [`tokens`]: [`TokenStore`], the token file beside the store (SHA-256 hashes only, mode
//!   0600, atomic and locked changes), and [`token_from_header`] for `Authorization`.
//!
//! A request is served like this: take the token from the `Authorization` header, find its
//! [`TokenInfo`] with [`TokenStore::authenticate`] (401 when none), then ask its policy
//! about the action on the segment (403 when refused). Before that, a cheap
//! [`TokenStore::changed_since`] tells whether the file changed (a `token revoke`) and the
//! snapshot needs a reload.

pub mod policy;
pub mod tokens;

pub use policy::{actions, Policy, PolicyError, Resource, ResourcePattern, Role};
pub use tokens::{
    default_path, token_from_header, validate_name, TokenError, TokenInfo, TokenStore,
};
