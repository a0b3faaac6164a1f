//! Feature drift between two snapshots (PSI, KS, missing share) as a stored artifact.
