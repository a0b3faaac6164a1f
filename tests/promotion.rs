//! Integration tests: promotion.
