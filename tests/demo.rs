//! `cis demo`: the batch job leaves no personal data in or beside the store.

use std::process::Command;

use crate::erasure::files_containing;
use crate::util::cis_bin;

#[test]
fn the_demo_leaves_no_generated_email_address_behind() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store_dir = dir.path().join("store");
    let scratch = dir.path().join("tmp");
    std::fs::create_dir(&scratch).expect("scratch dir");
    let out = Command::new(cis_bin())
        .arg("--store")
        .arg(&store_dir)
        .args(["demo", "--no-serve", "--customers", "400"])
        // Where the demo writes its generated inputs, so the test can see them removed.
        .env("TMPDIR", &scratch)
        .output()
        .expect("run cis demo");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    // The generator writes `c000123@example.com` for every customer; ingest drops the column.
    let found = files_containing(dir.path(), b"@example.com");
    assert!(found.is_empty(), "email addresses left in {found:?}");
    let left: Vec<_> = std::fs::read_dir(&scratch).expect("scratch").collect();
    assert!(left.is_empty(), "the generated inputs are removed afterwards: {left:?}");
}
