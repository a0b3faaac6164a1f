//! The standing mutation suite: seeded hostile variants of valid CSV, JSON Lines and CDNOW inputs
//! of every kind, each ingested on an in-memory store. Every case must not panic or hang, must
//! account for every physical line (accepted + duplicate + quarantined + blank = lines after the
//! header), must store every row it did not mutate, must list exactly as many quarantined rows as
//! its run counts, and must keep e-mail addresses out of the quarantine.
//!
//! `CIS_MUTATION_CASES=N` runs N cases instead of 5,000; `CIS_MUTATION_SEED=S` another seed.

use std::panic::AssertUnwindSafe;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use cis_core::event::Kind;
use cis_core::AsOf;
use cis_ingest::history::customer_events;
use cis_ingest::records::{quarantined, runs};
use cis_ingest::source::Format;
use cis_ingest::{ingest_reader, IngestError, IngestOptions, RecordedAt};
use cis_storage::{Store, GENESIS};
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

const DEFAULT_CASES: u64 = 5_000;
/// A case that makes no progress for this long is a hang.
const HANG: Duration = Duration::from_secs(60);

fn env_u64(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .map(|v| v.parse().expect("a whole number"))
        .unwrap_or(default)
}

// ---------------------------------------------------------------- valid inputs

fn columns(kind: Kind) -> &'static [&'static str] {
    match kind {
        Kind::Order => &[
            "order_id",
            "customer_id",
            "event_time",
            "amount",
            "currency",
            "quantity",
            "channel",
        ],
        Kind::Session => &[
            "session_id",
            "customer_id",
            "event_time",
            "duration_s",
            "page_views",
            "device",
        ],
        Kind::Return => &[
            "return_id",
            "order_id",
            "customer_id",
            "event_time",
            "amount",
            "currency",
            "reason",
        ],
        Kind::Customer => &["customer_id", "event_time", "signup_date", "country", "plan", "email"],
    }
}

/// A valid row of `kind` for customer `c{n}` (unique within a case), as field values.
fn valid_row(kind: Kind, n: usize, rng: &mut ChaCha8Rng) -> Vec<String> {
    let day = format!("2024-0{}-{:02}", rng.gen_range(1..10), rng.gen_range(1..29));
    let money = format!("{}.{:02}", rng.gen_range(0..500), rng.gen_range(0..100));
    let c = format!("c{n}");
    let v: Vec<String> = match kind {
        Kind::Order => vec![
            format!("o{n}"),
            c,
            format!("{day}T10:00:00Z"),
            money,
            "USD".into(),
            rng.gen_range(1..5).to_string(),
            "web".into(),
        ],
        Kind::Session => vec![
            format!("s{n}"),
            c,
            day,
            rng.gen_range(0..900).to_string(),
            rng.gen_range(0..30).to_string(),
            "mobile".into(),
        ],
        Kind::Return => vec![
            format!("r{n}"),
            format!("o{n}"),
            c,
            day,
            money,
            "EUR".into(),
            "damaged".into(),
        ],
        Kind::Customer => vec![
            c,
            day.clone(),
            day,
            "DE".into(),
            "pro".into(),
            format!("u{n}@example.com"),
        ],
    };
    v
}

/// A CDNOW row (orders only) for customer `c{n}`: the sample's 5 columns or the full log's 4.
fn cdnow_row(n: usize, full: bool, rng: &mut ChaCha8Rng) -> Vec<String> {
    let mut v = vec![
        format!("c{n}"),
        format!("1997{:02}{:02}", rng.gen_range(1..13), rng.gen_range(1..29)),
        rng.gen_range(1..9).to_string(),
        format!("{}.{:02}", rng.gen_range(0..300), rng.gen_range(0..100)),
    ];
    if !full {
        v.insert(0, format!("{:05}", rng.gen_range(1..99999)));
    }
    v
}

// ---------------------------------------------------------------- mutators

/// Replaces a field's value (before it is written in the file's format).
type FieldMutator = fn(&mut ChaCha8Rng) -> String;
/// Changes the bytes of one written row.
type ByteMutator = fn(&mut Vec<u8>, &mut ChaCha8Rng);

const FIELD_MUTATORS: &[(&str, FieldMutator)] = &[
    ("quoted_newline", |r| {
        ["\"a\nb\"", "\"a\r\nb\"", "\"x\ry\""]
            .choose(r)
            .expect("some")
            .to_string()
    }),
    ("stray_quote", |r| format!("\"{}", r.gen_range(0..100))),
    ("huge_field", |r| "x".repeat(r.gen_range(1_000..70_000))),
    ("extreme_number", |r| {
        [
            "99999999999999999999999999",
            "-0",
            "1e308",
            "NaN",
            "-9223372036854775808",
            "18446744073709551616",
            "0.000000001",
            "+1",
            "",
        ]
        .choose(r)
        .expect("some")
        .to_string()
    }),
    ("extreme_date", |r| {
        [
            "0000-01-01",
            "9999-12-31T23:59:59Z",
            "2024-02-30",
            "+275760-09-13T00:00:00Z",
            "1969-12-31T23:59:59.999999999Z",
            "2024-01-01T00:00:00+25:00",
            "19700101",
            "2024-13-01",
        ]
        .choose(r)
        .expect("some")
        .to_string()
    }),
    ("unicode", |r| {
        ["é", "𝄞", "\u{202e}evil", "\u{feff}", "日本"]
            .choose(r)
            .expect("some")
            .to_string()
    }),
];

fn at(bytes: &[u8], r: &mut ChaCha8Rng) -> usize {
    r.gen_range(0..=bytes.len())
}

const BYTE_MUTATORS: &[(&str, ByteMutator)] = &[
    ("random_bytes", |b, r| {
        for _ in 0..r.gen_range(1..5) {
            let i = at(b, r);
            if r.gen_bool(0.5) && i < b.len() {
                b[i] = r.gen();
            } else {
                b.insert(i, r.gen());
            }
        }
    }),
    ("truncate_row", |b, r| {
        let i = at(b, r);
        b.truncate(i);
    }),
    ("invalid_utf8", |b, r| {
        let bad: &[u8] = [&b"\xff"[..], b"\xc3", b"\x80", b"\xed\xa0\x80"]
            .choose(r)
            .expect("some");
        let i = at(b, r);
        b.splice(i..i, bad.iter().copied());
    }),
    // Same length, so a field sliced by byte offset would be cut inside the character.
    ("multibyte_char", |b, r| {
        let ch = ["é", "日", "𝄞"].choose(r).expect("some").as_bytes();
        if b.len() >= ch.len() {
            let i = r.gen_range(0..=b.len() - ch.len());
            b.splice(i..i + ch.len(), ch.iter().copied());
        }
    }),
    ("nul", |b, r| {
        let i = at(b, r);
        b.insert(i, 0);
    }),
];

/// What a case does to the whole file.
#[derive(Debug, Clone, Copy, PartialEq)]
enum FileMutator {
    Bom,
    Crlf,
    BareCr,
    NoFinalNewline,
    BlankLines,
    RepeatRow,
    TruncateFile,
    /// CSV: an unknown column in the header and every row (rows stay good).
    ExtraColumn,
    /// CSV: the columns in another order, header and rows alike (rows stay good).
    ShuffleColumns,
    /// CSV: a required column renamed (the file is refused).
    RenameColumn,
    /// CSV: a column named twice (the file is refused).
    DuplicateColumn,
}

const FILE_MUTATORS: &[FileMutator] = &[
    FileMutator::Bom,
    FileMutator::Crlf,
    FileMutator::BareCr,
    FileMutator::NoFinalNewline,
    FileMutator::BlankLines,
    FileMutator::RepeatRow,
    FileMutator::TruncateFile,
    FileMutator::ExtraColumn,
    FileMutator::ShuffleColumns,
    FileMutator::RenameColumn,
    FileMutator::DuplicateColumn,
];

impl FileMutator {
    fn csv_only(self) -> bool {
        matches!(
            self,
            FileMutator::ExtraColumn
                | FileMutator::ShuffleColumns
                | FileMutator::RenameColumn
                | FileMutator::DuplicateColumn
        )
    }

    fn refuses(self) -> bool {
        matches!(self, FileMutator::RenameColumn | FileMutator::DuplicateColumn)
    }
}

// ---------------------------------------------------------------- a case

struct Case {
    format: Format,
    kind: Kind,
    bytes: Vec<u8>,
    /// Lines of the file that are headers (not counted as lines read).
    header_lines: u64,
    /// Customers whose row was left intact: each must be stored.
    intact: Vec<String>,
    refused: bool,
    batch_rows: usize,
    what: Vec<String>,
}

fn write_row(format: Format, names: &[String], values: &[String]) -> Vec<u8> {
    match format {
        Format::Csv => values.join(",").into_bytes(),
        Format::Cdnow => values.join(" ").into_bytes(),
        Format::Jsonl => {
            let map: serde_json::Map<String, serde_json::Value> = names
                .iter()
                .zip(values)
                .map(|(k, v)| (k.clone(), serde_json::Value::String(v.clone())))
                .collect();
            serde_json::Value::Object(map).to_string().into_bytes()
        }
        // Not a line format: its hostile variants are in tests/parquet_in.rs.
        Format::Parquet => unreachable!("the mutation suite writes line formats only"),
    }
}

fn make_case(rng: &mut ChaCha8Rng) -> Case {
    let combos = [
        (Format::Csv, Kind::Order),
        (Format::Csv, Kind::Session),
        (Format::Csv, Kind::Return),
        (Format::Csv, Kind::Customer),
        (Format::Jsonl, Kind::Order),
        (Format::Jsonl, Kind::Session),
        (Format::Jsonl, Kind::Return),
        (Format::Jsonl, Kind::Customer),
        (Format::Cdnow, Kind::Order),
    ];
    let (format, kind) = *combos.choose(rng).expect("some");
    let cdnow_full = format == Format::Cdnow && rng.gen_bool(0.5);
    let mut what = vec![format!("{format:?} {kind:?}{}", if cdnow_full { " full" } else { "" })];
    let n_rows = rng.gen_range(1..=6);
    let mut names: Vec<String> = columns(kind).iter().map(|c| c.to_string()).collect();
    let mut rows: Vec<Vec<String>> = (1..=n_rows)
        .map(|n| match format {
            Format::Cdnow => cdnow_row(n, cdnow_full, rng),
            _ => valid_row(kind, n, rng),
        })
        .collect();

    let mut file: Vec<FileMutator> = Vec::new();
    for _ in 0..rng.gen_range(0..3) {
        let m = *FILE_MUTATORS.choose(rng).expect("some");
        if (format == Format::Csv || !m.csv_only()) && !file.contains(&m) {
            file.push(m);
        }
    }
    what.extend(file.iter().map(|m| format!("{m:?}")));
    // Column-level changes apply to header and rows alike.
    if file.contains(&FileMutator::ExtraColumn) {
        names.push("extra".into());
        for r in &mut rows {
            r.push("x".into());
        }
    }
    if file.contains(&FileMutator::ShuffleColumns) {
        let mut order: Vec<usize> = (0..names.len()).collect();
        order.shuffle(rng);
        names = order.iter().map(|&i| names[i].clone()).collect();
        for r in &mut rows {
            *r = order.iter().map(|&i| r[i].clone()).collect();
        }
    }
    let mut header = names.clone();
    if file.contains(&FileMutator::RenameColumn) {
        let i = rng.gen_range(0..2); // the first two columns of every kind are required
        let pos = header.iter().position(|h| h == columns(kind)[i]).expect("column");
        header[pos] = "bogus".into();
    }
    if file.contains(&FileMutator::DuplicateColumn) {
        let i = rng.gen_range(0..header.len());
        let j = (i + 1) % header.len();
        header[j] = header[i].to_uppercase();
    }

    // Row-level mutations, at most one per row.
    let mut written: Vec<(Vec<u8>, Option<String>)> = Vec::new();
    let mut mutated = vec![false; rows.len()];
    for _ in 0..rng.gen_range(0..=3) {
        let i = rng.gen_range(0..rows.len());
        mutated[i] = true;
    }
    let customer_at = match format {
        Format::Cdnow => usize::from(!cdnow_full),
        _ => names
            .iter()
            .position(|n| n == "customer_id")
            .expect("a customer column"),
    };
    for (i, values) in rows.iter().enumerate() {
        let customer = values[customer_at].clone();
        let mut values = values.clone();
        let bytes = if !mutated[i] {
            write_row(format, &names, &values)
        } else if rng.gen_bool(0.5) {
            let (name, m) = FIELD_MUTATORS.choose(rng).expect("some");
            let f = rng.gen_range(0..values.len());
            values[f] = m(rng);
            what.push(format!("row {i}: {name} in field {f}"));
            write_row(format, &names, &values)
        } else {
            let (name, m) = BYTE_MUTATORS.choose(rng).expect("some");
            let mut b = write_row(format, &names, &values);
            m(&mut b, rng);
            what.push(format!("row {i}: {name}"));
            b
        };
        written.push((bytes, (!mutated[i]).then_some(customer)));
    }
    if file.contains(&FileMutator::RepeatRow) {
        let i = rng.gen_range(0..written.len());
        let copy = written[i].clone();
        written.insert(i + 1, copy);
    }
    if file.contains(&FileMutator::BlankLines) {
        for _ in 0..rng.gen_range(1..3) {
            let i = rng.gen_range(0..=written.len());
            let blank = [&b""[..], b"  ", b"\t"].choose(rng).expect("some").to_vec();
            written.insert(i, (blank, None));
        }
    }

    let end: &[u8] = if file.contains(&FileMutator::Crlf) {
        b"\r\n"
    } else if file.contains(&FileMutator::BareCr) {
        b"\r"
    } else {
        b"\n"
    };
    let mut bytes = Vec::new();
    if file.contains(&FileMutator::Bom) {
        bytes.extend_from_slice(b"\xEF\xBB\xBF");
    }
    let header_line = match format {
        Format::Csv => Some(header.join(",")),
        Format::Cdnow if cdnow_full => Some("customer_id date number_of_cds dollar_value".to_string()),
        _ => None,
    };
    if let Some(h) = &header_line {
        bytes.extend_from_slice(h.as_bytes());
        bytes.extend_from_slice(end);
    }
    let body_start = bytes.len();
    let mut spans = Vec::new();
    for (i, (row, _)) in written.iter().enumerate() {
        let start = bytes.len();
        bytes.extend_from_slice(row);
        spans.push(start + row.len());
        if i + 1 < written.len() || !file.contains(&FileMutator::NoFinalNewline) {
            bytes.extend_from_slice(end);
        }
    }
    if file.contains(&FileMutator::TruncateFile) {
        let cut = rng.gen_range(body_start..=bytes.len());
        bytes.truncate(cut);
        for (w, row_end) in written.iter_mut().zip(&spans) {
            if *row_end > cut {
                w.1 = None;
            }
        }
    }
    let refused = file.iter().any(|m| m.refuses());
    Case {
        format,
        kind,
        bytes,
        header_lines: u64::from(header_line.is_some()),
        intact: if refused {
            Vec::new()
        } else {
            written.into_iter().filter_map(|w| w.1).collect()
        },
        refused,
        batch_rows: rng.gen_range(1..=4),
        what,
    }
}

/// Physical lines of `bytes`: ended by `\n`, `\r\n` or a bare `\r`, or by the end of the input.
fn physical_lines(bytes: &[u8]) -> u64 {
    let mut n = 0;
    let mut i = 0;
    let mut open = false;
    while i < bytes.len() {
        match bytes[i] {
            b'\r' => {
                n += 1;
                open = false;
                if bytes.get(i + 1) == Some(&b'\n') {
                    i += 1;
                }
            }
            b'\n' => {
                n += 1;
                open = false;
            }
            _ => open = true,
        }
        i += 1;
    }
    n + u64::from(open)
}

/// Runs one case; `Err` says what went wrong.
fn check(case: &Case) -> Result<(), String> {
    let store = Store::in_memory().expect("store");
    let opts = IngestOptions {
        recorded_at: RecordedAt::EventTime,
        batch_rows: case.batch_rows,
        ..IngestOptions::new(case.kind, case.format)
    };
    let got = std::panic::catch_unwind(AssertUnwindSafe(|| {
        ingest_reader(&store, &case.bytes[..], "case", 0, &opts, &mut |_| {})
    }))
    .map_err(|_| "panicked".to_string())?;
    let run = match got {
        Err(IngestError::MissingColumns { .. } | IngestError::Header { .. }) if case.refused => {
            let untouched = store.log().head().expect("head") == GENESIS
                && runs(&store).expect("runs").is_empty()
                && quarantined(&store, None).expect("list").is_empty();
            return if untouched {
                Ok(())
            } else {
                Err("a refused file wrote something".into())
            };
        }
        Err(e) => return Err(format!("ingest failed: {e}")),
        Ok(_) if case.refused => return Err("a file with a broken header was accepted".into()),
        Ok(run) => run,
    };
    let lines = physical_lines(&case.bytes) - case.header_lines;
    if run.lines != lines {
        return Err(format!("{} lines read, the file has {lines}", run.lines));
    }
    let sum = run.accepted + run.duplicates + run.quarantined + run.blank;
    if sum != lines {
        return Err(format!("{lines} lines but {sum} accounted for: {run:?}"));
    }
    let listed = quarantined(&store, Some(run.run)).expect("list");
    if listed.len() as u64 != run.quarantined {
        return Err(format!("{} quarantined, {} listed", run.quarantined, listed.len()));
    }
    for c in &case.intact {
        if customer_events(&store, c, AsOf::new(None, None))
            .expect("read")
            .is_empty()
        {
            return Err(format!("the intact row of {c} was not stored"));
        }
    }
    if case.format == Format::Csv {
        if let Some(q) = listed.iter().find(|q| q.raw.contains("@example")) {
            return Err(format!("an e-mail address reached the quarantine: {q:?}"));
        }
    }
    Ok(())
}

#[test]
fn hostile_inputs_never_panic_hang_or_lose_a_line() {
    let cases = env_u64("CIS_MUTATION_CASES", DEFAULT_CASES);
    let seed = env_u64("CIS_MUTATION_SEED", 12);
    let (tx, rx) = mpsc::channel::<u64>();
    let worker = std::thread::spawn(move || -> Vec<String> {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let mut failures = Vec::new();
        for i in 0..cases {
            let case = make_case(&mut rng);
            if let Err(why) = check(&case) {
                failures.push(format!(
                    "case {i} ({}): {why}\n  input: {:?}",
                    case.what.join(", "),
                    String::from_utf8_lossy(&case.bytes[..case.bytes.len().min(400)])
                ));
            }
            let _ = tx.send(i);
        }
        failures
    });
    let started = Instant::now();
    let mut last = None;
    loop {
        match rx.recv_timeout(HANG) {
            Ok(i) => last = Some(i),
            Err(mpsc::RecvTimeoutError::Disconnected) => break,
            Err(mpsc::RecvTimeoutError::Timeout) => {
                panic!("case {} made no progress for {HANG:?}", last.map_or(0, |i| i + 1))
            }
        }
    }
    let failures = worker.join().expect("the suite itself does not panic");
    eprintln!(
        "mutation suite: {cases} cases (seed {seed}) in {:.2} s, {} failed",
        started.elapsed().as_secs_f64(),
        failures.len()
    );
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}
