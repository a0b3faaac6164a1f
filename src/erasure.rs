//! Erasure of one customer (data-subject request): crypto-shredding, tombstones, redaction.
