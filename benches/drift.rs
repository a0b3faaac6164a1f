//! Drift report benchmark (filled in below).
fn main() {}
