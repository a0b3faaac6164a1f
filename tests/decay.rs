//! Integration tests: decay.
