//! Helpers shared by the sync tests.

pub mod fake_ld;
