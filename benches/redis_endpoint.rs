//! Placeholder: the Redis endpoint bench (serve --redis against redis-server) is being written.
fn main() {}
