//! Integration tests: erasure.
