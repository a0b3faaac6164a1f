//! Integration tests: quality.
