//! The tests that drive programs outside Rust, in a binary of their own (`cargo test --test
//! external`): the dashboard in Debian's headless Chromium through chromedriver, the exports
//! read back by DuckDB, pandas, pyarrow and Polars, the generated feature SQL run in DuckDB and Spark, the churn fit, HDBSCAN segments and embeddings against scikit-learn's, the Cox fit against lifelines'. `.ci/run`
//! installs them; `CIS_SKIP_PYTHON_TESTS=1` skips the Python ones.

// These helper modules are shared with the integration binary, which uses what this one does not.
#[allow(dead_code)]
mod http;
#[allow(dead_code)]
mod scored;
#[allow(dead_code)]
mod tables;
#[allow(dead_code)]
mod util;

mod browser;
mod embedding;
mod features_sql;
mod lifelines;
mod parquet_python;
mod python;
mod readback;
mod sklearn;
mod trainset_readback;
