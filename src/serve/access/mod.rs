//! Access tokens for the HTTP front door: how they are made, kept (hashed) and checked, and
//! the role policies that say what a token may do.
//!
//! - [`policy`]: [`Policy`], LaunchDarkly's role-statement JSON form, and the built-in
//!   [`Role`]s; [`Policy::allows`] answers "may this token do `action` on this segment?".

pub mod policy;

pub use policy::{actions, Policy, PolicyError, Resource, ResourcePattern, Role};
