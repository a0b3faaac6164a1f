//! Running a Python script from a test (the external binary only).

/// Whether the Python tests are skipped (`CIS_SKIP_PYTHON_TESTS`); says so, naming `what`.
pub fn python_skipped(what: &str) -> bool {
    let skipped = std::env::var_os("CIS_SKIP_PYTHON_TESTS").is_some();
    if skipped {
        eprintln!("CIS_SKIP_PYTHON_TESTS is set: not {what}");
    }
    skipped
}

/// Runs `script` with `python3 -c` and `args`, prints what it printed, and parses that as one
/// JSON object. `packages` are what the script imports (the CI script installs them).
pub fn python_json(script: &str, args: &[&std::ffi::OsStr], packages: &str) -> serde_json::Value {
    let out = std::process::Command::new("python3")
        .arg("-c")
        .arg(script)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("python3 runs (the CI script installs {packages}): {e}"));
    assert!(
        out.status.success(),
        "python failed (pip install {packages}; or set CIS_SKIP_PYTHON_TESTS=1):\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    println!("{stdout}");
    serde_json::from_str(&stdout).expect("one JSON object")
}
