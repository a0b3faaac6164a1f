//! The promotion record: which model held which stage when (a hash-chained ledger).
