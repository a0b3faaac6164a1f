//! Crash safety: SIGKILL an ingest mid-way, reopen, and check that every acknowledged
//! batch survived, the log verifies, and re-running converges on the uninterrupted head.

use std::io::{BufRead, BufReader, Write};
use std::os::unix::process::ExitStatusExt;
use std::process::{Command, Stdio};

use cis_core::event::Kind;
use cis_ingest::source::Format;
use cis_ingest::RecordedAt;
use cis_storage::{hex, Store};

use crate::util::{cis_bin, ingest};

const ROWS: usize = 400_000;

fn big_orders(path: &std::path::Path) {
    let mut f = std::io::BufWriter::new(std::fs::File::create(path).expect("create"));
    writeln!(f, "order_id,customer_id,event_time,amount,currency").expect("write");
    for i in 0..ROWS {
        let day = 1 + i % 28;
        writeln!(
            f,
            "o{i},c{},2024-03-{day:02}T{:02}:00:00Z,{}.{:02},USD",
            i % 5000,
            i % 24,
            i % 300,
            i % 100
        )
        .expect("write");
    }
}

struct Ack {
    batch: u64,
    events: u64,
    head: String,
}

fn parse_ack(line: &str) -> Option<Ack> {
    // "committed batch N: E new events from lines a-b, head H"
    let rest = line.strip_prefix("committed batch ")?;
    let (batch, rest) = rest.split_once(": ")?;
    let (events, rest) = rest.split_once(" new events")?;
    let head = rest.rsplit_once("head ")?.1;
    Some(Ack {
        batch: batch.parse().ok()?,
        events: events.parse().ok()?,
        head: head.to_string(),
    })
}

#[test]
fn kill_9_mid_ingest_loses_no_acknowledged_batch() {
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("orders.csv");
    big_orders(&file);
    let store_dir = dir.path().join("store");

    let mut child = Command::new(cis_bin())
        .args(["--store"])
        .arg(&store_dir)
        .args(["ingest", "orders"])
        .arg(&file)
        .args(["--recorded-at", "event-time", "--batch-rows", "10000"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn cis");
    let stdout = child.stdout.take().expect("stdout");
    let mut acks = Vec::new();
    for line in BufReader::new(stdout).lines() {
        if let Some(ack) = parse_ack(&line.expect("line")) {
            acks.push(ack);
        }
        if acks.len() == 3 {
            child.kill().expect("SIGKILL");
            break;
        }
    }
    let status = child.wait().expect("wait");
    assert_eq!(
        status.signal(),
        Some(9),
        "the child must die mid-ingest, not finish ({status:?})"
    );
    assert_eq!(acks.len(), 3);

    let store = Store::open(&store_dir).expect("reopen after SIGKILL");
    let report = store.log().verify().expect("log verifies after the crash");
    let batches = store.log().batches().expect("batches");
    for ack in &acks {
        let b = &batches[ack.batch as usize - 1];
        assert_eq!(
            (b.events, hex(&b.head_after)),
            (ack.events, ack.head.clone()),
            "batch {}",
            ack.batch
        );
    }
    assert!(report.events >= acks.iter().map(|a| a.events).sum::<u64>());
    assert!(report.events < ROWS as u64);

    let rerun = ingest(&store, Kind::Order, Format::Csv, &file, RecordedAt::EventTime);
    assert_eq!(rerun.accepted + rerun.duplicates, ROWS as u64);
    assert_eq!(
        rerun.duplicates, report.events,
        "exactly the events that survived are skipped"
    );
    let after = store.log().verify().expect("verifies after the re-run");
    assert_eq!(after.events, ROWS as u64, "every row stored exactly once");

    let clean = Store::in_memory().expect("store");
    let uninterrupted = ingest(&clean, Kind::Order, Format::Csv, &file, RecordedAt::EventTime);
    assert_eq!(hex(&after.head), uninterrupted.head_after);
}
