//! The API access log: who read what, when (a hash-chained ledger written off the request path).
