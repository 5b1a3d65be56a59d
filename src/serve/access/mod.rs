//! Access tokens for the HTTP front door: how they are made, kept (hashed) and checked, and
//! the role policies that say what a token may do.
