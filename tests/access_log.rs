//! Integration tests: access_log.
