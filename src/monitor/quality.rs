//! Data quality per ingest run and per event-day, with flags for anomalies.
