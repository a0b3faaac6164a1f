//! The visible event log as Parquet tables, for engines that compute features themselves
//! (Spark, DuckDB: [`crate::sql`] renders the feature definitions over these tables).
//!
//! `export_events` reads the log at (T, K) through the store's own scan (what a snapshot at
//! (T, K) would see; erased events are not visible) and writes one table per event kind —
//! `orders`, `sessions`, `returns`, `customers` — partitioned hive-style by customer bucket:
//! `DIR/<table>/bucket=NN/part-0.parquet`. A customer's bucket is the first
//! [`BUCKET_BITS`] bits of blake3 of its id (the store's own bucket, coarsened), so every event
//! of a customer is in one bucket and buckets can be processed independently. Every bucket has a
//! file of every table, empty or not, so a glob over a table always matches.
//!
//! Columns: `event_id` (hex), `customer_id`, `event_time` and `recorded_at` (timestamp UTC,
//! microseconds), then every payload field typed: money as `amount` decimal(38, 6) (micro-units,
//! the precision features sum in, exact for every currency's minor units) beside its
//! `currency`; counts and durations int64; `signup_date` a timestamp; `attributes` a map.
//!
//! The export is streamed bucket by bucket (at most 65,536 rows, one record batch, of each table in
//! memory) into `DIR.tmp-<pid>`, each file synced; `_SUCCESS` (T, K, the bucket count and the
//! row counts) is written last and the directory then renamed to `DIR`, so a half-written
//! export is never at `DIR` and a directory without `_SUCCESS` is not an export.

use std::collections::BTreeMap;
use std::fs::{self, File};
use std::io::{self, BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use arrow::array::{
    Array, ArrayBuilder, ArrayRef, Decimal128Builder, Int64Builder, MapBuilder, StringBuilder,
    TimestampMicrosecondBuilder,
};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};
use arrow::record_batch::RecordBatch;
use cis_storage::block::BUCKETS;
use cis_storage::{hex, EventRef, Store};
use parquet::arrow::ArrowWriter;

use crate::{parquet_writer, ExportError, BATCH_ROWS};
use cis_core::event::{decode_body, Kind, Payload};
use cis_core::money;
use cis_core::time::{self, Timestamp};
use cis_core::{AsOf, Choice};

/// Buckets of the export: 2^BUCKET_BITS.
pub const BUCKET_BITS: u32 = 5;
pub const EXPORT_BUCKETS: u16 = 1 << BUCKET_BITS;
/// The marker an export's directory holds once it is complete.
pub const MARKER: &str = "_SUCCESS";
/// Bumped whenever a column is added, removed, renamed or retyped.
pub const SCHEMA_VERSION: u32 = 1;
/// `amount`: decimal(38, 6), micro-units of the currency.
pub const AMOUNT_PRECISION: u8 = 38;
pub const AMOUNT_SCALE: i8 = 6;

/// The tables, one per kind, named as `cis ingest` names the kinds.
pub fn table_name(kind: Kind) -> &'static str {
    kind.choice_name()
}

/// What an events export wrote.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EventsSummary {
    pub dir: PathBuf,
    pub at: AsOf,
    /// Rows per table, in [`Kind::CHOICES`] order.
    pub rows: Vec<(&'static str, u64)>,
    pub bytes: u64,
}

/// What `_SUCCESS` says about an export.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Manifest {
    pub at: AsOf,
    pub buckets: u16,
}

fn ts_type() -> DataType {
    DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into()))
}

/// The schema of `kind`'s table.
pub fn schema(kind: Kind) -> SchemaRef {
    let text = |n: &str, null: bool| Field::new(n, DataType::Utf8, null);
    let int = |n: &str, null: bool| Field::new(n, DataType::Int64, null);
    let amount = || Field::new("amount", DataType::Decimal128(AMOUNT_PRECISION, AMOUNT_SCALE), false);
    let mut fields = vec![
        text("event_id", false),
        text("customer_id", false),
        Field::new("event_time", ts_type(), false),
        Field::new("recorded_at", ts_type(), false),
    ];
    fields.extend(match kind {
        Kind::Order => vec![
            text("order_id", false),
            amount(),
            text("currency", false),
            int("quantity", true),
            text("channel", true),
        ],
        Kind::Session => vec![
            text("session_id", false),
            int("duration_s", false),
            int("page_views", true),
            text("device", true),
        ],
        Kind::Return => vec![
            text("return_id", false),
            text("order_id", false),
            amount(),
            text("currency", false),
            text("reason", true),
        ],
        Kind::Customer => vec![
            Field::new("signup_date", ts_type(), true),
            text("country", true),
            Field::new("attributes", attributes_builder().finish().data_type().clone(), false),
        ],
    });
    Arc::new(Schema::new(fields))
}

fn attributes_builder() -> MapBuilder<StringBuilder, StringBuilder> {
    MapBuilder::new(None, StringBuilder::new(), StringBuilder::new())
}

/// The payload columns of one table being filled, typed by kind, in schema order.
enum PayloadColumns {
    Order {
        order_id: StringBuilder,
        amount: Decimal128Builder,
        currency: StringBuilder,
        quantity: Int64Builder,
        channel: StringBuilder,
    },
    Session {
        session_id: StringBuilder,
        duration_s: Int64Builder,
        page_views: Int64Builder,
        device: StringBuilder,
    },
    Return {
        return_id: StringBuilder,
        order_id: StringBuilder,
        amount: Decimal128Builder,
        currency: StringBuilder,
        reason: StringBuilder,
    },
    Customer {
        signup_date: TimestampMicrosecondBuilder,
        country: StringBuilder,
        attributes: MapBuilder<StringBuilder, StringBuilder>,
    },
}

fn ts_builder() -> TimestampMicrosecondBuilder {
    TimestampMicrosecondBuilder::new().with_timezone("UTC")
}

fn amount_builder() -> Decimal128Builder {
    Decimal128Builder::new().with_data_type(DataType::Decimal128(AMOUNT_PRECISION, AMOUNT_SCALE))
}

impl PayloadColumns {
    fn new(kind: Kind) -> PayloadColumns {
        let text = StringBuilder::new;
        match kind {
            Kind::Order => PayloadColumns::Order {
                order_id: text(),
                amount: amount_builder(),
                currency: text(),
                quantity: Int64Builder::new(),
                channel: text(),
            },
            Kind::Session => PayloadColumns::Session {
                session_id: text(),
                duration_s: Int64Builder::new(),
                page_views: Int64Builder::new(),
                device: text(),
            },
            Kind::Return => PayloadColumns::Return {
                return_id: text(),
                order_id: text(),
                amount: amount_builder(),
                currency: text(),
                reason: text(),
            },
            Kind::Customer => PayloadColumns::Customer {
                signup_date: ts_builder(),
                country: text(),
                attributes: attributes_builder(),
            },
        }
    }

    /// Appends `payload`; false (nothing appended) when it is not of this table's kind.
    fn push(&mut self, payload: &Payload) -> Result<bool, ExportError> {
        match (self, payload) {
            (
                PayloadColumns::Order {
                    order_id,
                    amount,
                    currency,
                    quantity,
                    channel,
                },
                Payload::Order(o),
            ) => {
                order_id.append_value(&o.order_id);
                amount.append_value(money::to_micros(o.amount.minor, &o.amount.currency));
                currency.append_value(&o.amount.currency);
                quantity.append_option(o.quantity.map(i64::from));
                channel.append_option(o.channel.as_deref());
            }
            (
                PayloadColumns::Session {
                    session_id,
                    duration_s,
                    page_views,
                    device,
                },
                Payload::Session(s),
            ) => {
                session_id.append_value(&s.session_id);
                duration_s.append_value(i64::from(s.duration_s));
                page_views.append_option(s.page_views.map(i64::from));
                device.append_option(s.device.as_deref());
            }
            (
                PayloadColumns::Return {
                    return_id,
                    order_id,
                    amount,
                    currency,
                    reason,
                },
                Payload::Return(r),
            ) => {
                return_id.append_value(&r.return_id);
                order_id.append_value(&r.order_id);
                amount.append_value(money::to_micros(r.amount.minor, &r.amount.currency));
                currency.append_value(&r.amount.currency);
                reason.append_option(r.reason.as_deref());
            }
            (
                PayloadColumns::Customer {
                    signup_date,
                    country,
                    attributes,
                },
                Payload::Customer(c),
            ) => {
                signup_date.append_option(c.signup_date.map(|d| d.micros()));
                country.append_option(c.country.as_deref());
                for (k, v) in &c.attributes {
                    attributes.keys().append_value(k);
                    attributes.values().append_value(v);
                }
                attributes.append(true)?;
            }
            _ => return Ok(false),
        }
        Ok(true)
    }

    fn finish(&mut self) -> Vec<ArrayRef> {
        fn col(b: &mut impl ArrayBuilder) -> ArrayRef {
            b.finish()
        }
        match self {
            PayloadColumns::Order {
                order_id,
                amount,
                currency,
                quantity,
                channel,
            } => vec![col(order_id), col(amount), col(currency), col(quantity), col(channel)],
            PayloadColumns::Session {
                session_id,
                duration_s,
                page_views,
                device,
            } => vec![col(session_id), col(duration_s), col(page_views), col(device)],
            PayloadColumns::Return {
                return_id,
                order_id,
                amount,
                currency,
                reason,
            } => vec![col(return_id), col(order_id), col(amount), col(currency), col(reason)],
            PayloadColumns::Customer {
                signup_date,
                country,
                attributes,
            } => vec![col(signup_date), col(country), col(attributes)],
        }
    }
}

/// The columns of one table being filled, in schema order.
struct Columns {
    kind: Kind,
    schema: SchemaRef,
    event_id: StringBuilder,
    customer_id: StringBuilder,
    event_time: TimestampMicrosecondBuilder,
    recorded_at: TimestampMicrosecondBuilder,
    payload: PayloadColumns,
}

impl Columns {
    fn new(kind: Kind) -> Columns {
        Columns {
            kind,
            schema: schema(kind),
            event_id: StringBuilder::new(),
            customer_id: StringBuilder::new(),
            event_time: ts_builder(),
            recorded_at: ts_builder(),
            payload: PayloadColumns::new(kind),
        }
    }

    fn len(&self) -> usize {
        self.event_id.len()
    }

    fn push(&mut self, e: &EventRef<'_>, payload: &Payload) -> Result<(), ExportError> {
        // The payload first: a body of another kind (which decoding by the record's kind
        // cannot give) appends nothing, so the columns stay of one length.
        if !self.payload.push(payload)? {
            return Err(ExportError::KindMismatch(table_name(self.kind)));
        }
        self.event_id.append_value(hex(e.id));
        self.customer_id.append_value(e.subject);
        self.event_time.append_value(e.event_time);
        self.recorded_at.append_value(e.recorded_at);
        Ok(())
    }

    /// The rows so far as a batch; the builders are left empty.
    fn batch(&mut self) -> Result<RecordBatch, ExportError> {
        let mut cols: Vec<ArrayRef> = vec![
            Arc::new(self.event_id.finish()),
            Arc::new(self.customer_id.finish()),
            Arc::new(self.event_time.finish()),
            Arc::new(self.recorded_at.finish()),
        ];
        cols.extend(self.payload.finish());
        Ok(RecordBatch::try_new(Arc::clone(&self.schema), cols)?)
    }
}

/// One table's file of one bucket, open.
struct Part {
    path: PathBuf,
    rows: u64,
    columns: Columns,
    writer: ArrowWriter<BufWriter<File>>,
}

impl Part {
    fn flush_rows(&mut self) -> Result<(), ExportError> {
        let batch = self.columns.batch()?;
        self.writer.write(&batch)?;
        // One row group per batch, as in the feature tables.
        self.writer.flush()?;
        Ok(())
    }

    fn close(mut self) -> Result<u64, ExportError> {
        if self.columns.len() > 0 {
            self.flush_rows()?;
        }
        let write_err = |reason: io::Error| ExportError::Write {
            path: self.path.clone(),
            reason,
        };
        let buf = self.writer.into_inner()?;
        let file = buf.into_inner().map_err(|e| write_err(e.into_error()))?;
        file.sync_all().map_err(write_err)?;
        Ok(file.metadata().map_err(write_err)?.len())
    }
}

/// Writes the log visible at `at` under `dir` (which must not exist yet); see the module docs.
pub fn export_events(store: &Store, at: AsOf, dir: &Path) -> Result<EventsSummary, ExportError> {
    if dir.exists() {
        return Err(ExportError::Exists(dir.to_path_buf()));
    }
    let name = dir
        .file_name()
        .ok_or_else(|| ExportError::Write {
            path: dir.to_path_buf(),
            reason: io::Error::new(io::ErrorKind::InvalidInput, "not a directory name"),
        })?
        .to_string_lossy()
        .into_owned();
    let parent = match dir.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    if !parent.is_dir() {
        return Err(ExportError::NoDirectory {
            path: dir.to_path_buf(),
            dir: parent.to_path_buf(),
        });
    }
    let tmp = parent.join(format!(".{name}.tmp-{}", std::process::id()));
    let result = write_tree(store, at, &tmp).and_then(|(rows, bytes)| {
        fs::rename(&tmp, dir).map_err(|reason| ExportError::Write {
            path: dir.to_path_buf(),
            reason,
        })?;
        if let Ok(d) = File::open(parent) {
            // Make the rename durable; not every platform can open a directory for this.
            let _ = d.sync_all();
        }
        Ok(EventsSummary {
            dir: dir.to_path_buf(),
            at,
            rows,
            bytes,
        })
    });
    if result.is_err() {
        let _ = fs::remove_dir_all(&tmp);
    }
    result
}

type Rows = Vec<(&'static str, u64)>;

fn write_tree(store: &Store, at: AsOf, tmp: &Path) -> Result<(Rows, u64), ExportError> {
    let write_err = |path: &Path| {
        let path = path.to_path_buf();
        move |reason: io::Error| ExportError::Write { path, reason }
    };
    fs::create_dir(tmp).map_err(write_err(tmp))?;
    let mut totals: BTreeMap<Kind, u64> = BTreeMap::new();
    let mut bytes = 0u64;
    let per_export = BUCKETS / EXPORT_BUCKETS;
    for bucket in 0..EXPORT_BUCKETS {
        let mut parts = Vec::with_capacity(Kind::CHOICES.len());
        for &kind in Kind::CHOICES {
            let part_dir = tmp.join(table_name(kind)).join(format!("bucket={bucket:02}"));
            fs::create_dir_all(&part_dir).map_err(write_err(&part_dir))?;
            let path = part_dir.join("part-0.parquet");
            let file = File::create_new(&path).map_err(write_err(&path))?;
            let columns = Columns::new(kind);
            let writer = parquet_writer(BufWriter::new(file), &columns.schema, metadata(kind, at))?;
            parts.push(Part {
                path,
                rows: 0,
                columns,
                writer,
            });
        }
        let storage = bucket * per_export..(bucket + 1) * per_export;
        store.log().scan_buckets(at.visibility(), storage, |e| {
            let kind = Kind::from_u8(e.kind).ok_or(ExportError::UnknownKind(e.kind))?;
            let payload = decode_body(kind, e.body)?;
            let i = Kind::CHOICES.iter().position(|&k| k == kind).unwrap_or_default();
            let part = &mut parts[i];
            part.columns.push(&e, &payload)?;
            part.rows += 1;
            if part.columns.len() >= BATCH_ROWS {
                part.flush_rows()?;
            }
            Ok::<_, ExportError>(())
        })?;
        for (&kind, part) in Kind::CHOICES.iter().zip(parts) {
            *totals.entry(kind).or_default() += part.rows;
            bytes += part.close()?;
        }
    }
    let rows: Rows = Kind::CHOICES
        .iter()
        .map(|&k| (table_name(k), totals.get(&k).copied().unwrap_or_default()))
        .collect();
    let marker = tmp.join(MARKER);
    let mut text = format!(
        "schema_version={SCHEMA_VERSION}\nas_of={}\nknown_at={}\nbuckets={EXPORT_BUCKETS}\n",
        time::format(at.as_of),
        time::format(at.known_at)
    );
    for (table, n) in &rows {
        text.push_str(&format!("rows.{table}={n}\n"));
    }
    let mut f = File::create_new(&marker).map_err(write_err(&marker))?;
    f.write_all(text.as_bytes()).map_err(write_err(&marker))?;
    f.sync_all().map_err(write_err(&marker))?;
    Ok((rows, bytes))
}

/// `cis.*` key-value metadata of every file.
fn metadata(kind: Kind, at: AsOf) -> Vec<(&'static str, String)> {
    vec![
        ("cis.table", table_name(kind).to_string()),
        ("cis.schema_version", SCHEMA_VERSION.to_string()),
        ("cis.as_of", time::format(at.as_of)),
        ("cis.known_at", time::format(at.known_at)),
    ]
}

/// Reads the `_SUCCESS` marker of the export in `dir`: an error when `dir` is not a complete
/// events export (no marker, another schema version, a table missing).
pub fn read_manifest(dir: &Path) -> Result<Manifest, ExportError> {
    let not = |reason: String| ExportError::NotAnExport {
        dir: dir.to_path_buf(),
        reason,
    };
    if !dir.is_dir() {
        return Err(not("no such directory".into()));
    }
    let text = fs::read_to_string(dir.join(MARKER))
        .map_err(|e| not(format!("no readable {MARKER} ({e}): not a finished cis export events")))?;
    let fields: BTreeMap<&str, &str> = text.lines().filter_map(|l| l.split_once('=')).collect();
    let field = |k: &str| {
        fields
            .get(k)
            .copied()
            .ok_or_else(|| not(format!("{MARKER} has no {k}")))
    };
    let version = field("schema_version")?;
    if version != SCHEMA_VERSION.to_string() {
        return Err(not(format!(
            "schema version {version}, this cis reads {SCHEMA_VERSION}"
        )));
    }
    let when = |k: &str| -> Result<Timestamp, ExportError> {
        let v = field(k)?;
        time::parse_timestamp(v).map_err(|e| not(format!("{k} '{v}': {e}")))
    };
    let at = AsOf {
        as_of: when("as_of")?,
        known_at: when("known_at")?,
    };
    let buckets = field("buckets")?.parse().map_err(|e| not(format!("buckets: {e}")))?;
    for &kind in Kind::CHOICES {
        if !dir.join(table_name(kind)).is_dir() {
            return Err(not(format!("table {} is missing", table_name(kind))));
        }
    }
    Ok(Manifest { at, buckets })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_table_has_the_common_columns_first() {
        for &kind in Kind::CHOICES {
            let s = schema(kind);
            let names: Vec<&str> = s.fields().iter().take(4).map(|f| f.name().as_str()).collect();
            assert_eq!(names, ["event_id", "customer_id", "event_time", "recorded_at"]);
            // The builders match the schema: an empty batch is accepted.
            Columns::new(kind).batch().expect("builders follow the schema");
        }
        assert_eq!(BUCKETS % EXPORT_BUCKETS, 0);
    }

    /// A failure part-way (here an event of an unknown kind, met in its bucket's scan after
    /// other buckets were written) leaves nothing at the target and no temporary directory.
    #[test]
    fn a_failed_export_leaves_no_directory() {
        let store = Store::in_memory().expect("store");
        let event = cis_storage::NewEvent {
            kind: 9,
            subject: "c1".into(),
            event_time: 0,
            recorded_at: 0,
            body: vec![1],
        };
        store.log().append(vec![event], 1, 0).expect("append");
        let dir = tempfile::tempdir().expect("tempdir");
        let target = dir.path().join("events");
        let at = AsOf::new(Some(Timestamp::from_day(1)), None);
        let err = export_events(&store, at, &target).expect_err("unknown kind");
        assert!(matches!(err, ExportError::UnknownKind(9)), "{err}");
        assert_eq!(fs::read_dir(dir.path()).expect("read dir").count(), 0);
    }

    #[test]
    fn a_directory_without_a_marker_is_not_an_export() {
        let dir = tempfile::tempdir().expect("tempdir");
        let err = read_manifest(dir.path()).expect_err("no marker");
        assert!(err.to_string().contains("_SUCCESS"), "{err}");
        let err = read_manifest(&dir.path().join("absent")).expect_err("no dir");
        assert!(err.to_string().contains("no such directory"), "{err}");
    }
}
