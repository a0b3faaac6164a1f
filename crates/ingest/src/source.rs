//! Reading input files into rows of named fields, whatever the format.
//!
//! Every format is read as **physical lines**: bytes ended by `\n`, `\r\n` or a bare `\r` (or by
//! the end of the input); a UTF-8 byte-order mark at the start is skipped. One physical line is at
//! most one row: a CSV quoted field cannot span lines, so a stray opening quote spoils only its own
//! line (quarantined) instead of folding the rest of the file into one "row". Each line after the
//! header is therefore exactly one of: blank (empty or only whitespace, skipped), a row (accepted,
//! duplicate or quarantined), or a row-level problem (quarantined) — see [`Source::lines`].

use std::io::{BufRead, Read};

use crate::IngestError;

pub mod parquet;

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Format {
    Csv,
    Jsonl,
    /// The CDNOW transaction log, orders only: whitespace separated columns, either the sample's
    /// five (original id, customer id, YYYYMMDD, quantity, dollar value) or the full log's four
    /// (customer id, YYYYMMDD, quantity, dollar value) under the header
    /// `customer_id date number_of_cds dollar_value`.
    Cdnow,
    /// Apache Parquet, read record batch by record batch; the Arrow types it reads are listed
    /// in [`parquet`]. Not line based: it is read from a file ([`crate::ingest_file`]).
    Parquet,
}

impl cis_core::Choice for Format {
    const CHOICES: &'static [Format] = &[Format::Csv, Format::Jsonl, Format::Cdnow, Format::Parquet];

    /// The same lower-case names as the serialised form (`#[serde(rename_all)]` above).
    fn choice_name(self) -> &'static str {
        match self {
            Format::Csv => "csv",
            Format::Jsonl => "jsonl",
            Format::Cdnow => "cdnow",
            Format::Parquet => "parquet",
        }
    }
}

impl Format {
    /// The format a file's name suggests: `.jsonl`, `.ndjson` or `.json` is JSON Lines,
    /// `.parquet` or `.pq` Parquet, anything else CSV (CDNOW is never guessed).
    pub fn from_file_name(name: &str) -> Format {
        let ext = std::path::Path::new(name).extension().and_then(|e| e.to_str());
        match ext.map(str::to_ascii_lowercase).as_deref() {
            Some("jsonl" | "ndjson" | "json") => Format::Jsonl,
            Some("parquet" | "pq") => Format::Parquet,
            _ => Format::Csv,
        }
    }
}

/// Column names that carry personal data: never read, never stored, never quarantined.
pub const PERSONAL_DATA: &[&str] = &[
    "email",
    "e_mail",
    "email_address",
    "name",
    "first_name",
    "last_name",
    "full_name",
    "phone",
    "phone_number",
    "mobile",
    "address",
    "street",
    "street_address",
    "postal_address",
];

pub fn is_personal(column: &str) -> bool {
    PERSONAL_DATA.contains(&column)
}

/// Header names are matched trimmed and lower-cased.
pub fn normalise_name(name: &str) -> String {
    name.trim().to_ascii_lowercase()
}

/// One input row: named fields (personal data already removed) and its raw text.
#[derive(Debug, Clone, Default)]
pub struct Row {
    pub line: u64,
    fields: Vec<(String, String)>,
    pub raw: String,
}

impl Row {
    pub fn new(line: u64, fields: Vec<(String, String)>, raw: String) -> Self {
        Row { line, fields, raw }
    }

    /// The trimmed value of `name`; `None` when absent or empty.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.fields
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.trim())
            .filter(|v| !v.is_empty())
    }

    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.fields.iter().map(|(k, _)| k.as_str())
    }
}

/// What a source yields: a row, or a row-level problem to quarantine (the file goes on).
pub enum Item {
    Row(Row),
    Bad { line: u64, reason: String, raw: String },
}

pub trait Source {
    /// Column names known up front (CSV header, fixed CDNOW layout); `None` for JSONL.
    fn columns(&self) -> Option<&[String]>;
    /// Personal-data columns seen so far (dropped).
    fn dropped(&self) -> Vec<String>;
    fn next_item(&mut self) -> Result<Option<Item>, IngestError>;
    /// Takes back a row [`Source::next_item`] returned, once the caller is done with it, to fill
    /// it again rather than allocate the next row's strings.
    fn recycle(&mut self, _row: Row) {}
    /// Physical lines read so far after the header, and how many of them were blank: every other
    /// line was yielded as exactly one [`Item`].
    fn lines(&self) -> LineCount;
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LineCount {
    pub read: u64,
    pub blank: u64,
}

pub fn open<'r>(
    format: Format,
    reader: Box<dyn Read + Send + 'r>,
    file: &str,
) -> Result<Box<dyn Source + Send + 'r>, IngestError> {
    let lines = Lines::new(std::io::BufReader::new(reader), file);
    Ok(match format {
        Format::Csv => Box::new(CsvSource::new(lines)?),
        Format::Jsonl => Box::new(JsonlSource {
            lines,
            count: LineCount::default(),
            dropped: Vec::new(),
        }),
        Format::Cdnow => Box::new(CdnowSource {
            lines,
            count: LineCount::default(),
            header_line: 0,
            columns: cdnow_columns(),
        }),
        // Parquet's footer is at the end and its columns anywhere: a stream cannot be read.
        Format::Parquet => return Err(IngestError::ParquetStream { file: file.into() }),
    })
}

const BOM: &[u8] = b"\xEF\xBB\xBF";

/// Splits a byte stream into physical lines (see the module doc).
struct Lines<R> {
    inner: R,
    /// Physical lines returned so far: the number of the current line.
    line: u64,
    /// The last line ended with `\r`: a `\n` right after it belongs to that line ending.
    after_cr: bool,
    buf: Vec<u8>,
    file: String,
}

impl<R: BufRead> Lines<R> {
    fn new(inner: R, file: &str) -> Self {
        Lines {
            inner,
            line: 0,
            after_cr: false,
            buf: Vec::new(),
            file: file.into(),
        }
    }

    /// Reads the next line into `self.buf` (without its ending); `false` at the end of input.
    fn advance(&mut self) -> Result<bool, IngestError> {
        self.buf.clear();
        let mut partial = false;
        loop {
            let avail = match self.inner.fill_buf() {
                Ok(a) => a,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    return Err(IngestError::Read {
                        file: self.file.clone(),
                        reason: format!("after line {}: {e}", self.line),
                    })
                }
            };
            if avail.is_empty() {
                break;
            }
            if std::mem::take(&mut self.after_cr) && avail[0] == b'\n' {
                self.inner.consume(1);
                continue;
            }
            match avail.iter().position(|&b| b == b'\n' || b == b'\r') {
                Some(i) => {
                    self.buf.extend_from_slice(&avail[..i]);
                    self.after_cr = avail[i] == b'\r';
                    self.inner.consume(i + 1);
                    return Ok(self.finish_line());
                }
                None => {
                    let n = avail.len();
                    self.buf.extend_from_slice(avail);
                    self.inner.consume(n);
                    partial = true;
                }
            }
        }
        Ok(partial && self.finish_line())
    }

    fn finish_line(&mut self) -> bool {
        self.line += 1;
        if self.line == 1 && self.buf.starts_with(BOM) {
            self.buf.drain(..BOM.len());
        }
        true
    }

    fn is_blank(&self) -> bool {
        self.buf.iter().all(u8::is_ascii_whitespace)
    }

    /// The current line as text, or a row-level problem if it is not UTF-8.
    fn text(&self) -> Result<&str, Item> {
        std::str::from_utf8(&self.buf).map_err(|e| Item::Bad {
            line: self.line,
            reason: format!("not valid UTF-8 (byte {})", e.valid_up_to() + 1),
            raw: String::new(),
        })
    }
}

struct CsvSource<R> {
    lines: Lines<R>,
    /// One csv parser, rewound onto each line in turn.
    parser: csv::Reader<std::io::Cursor<Vec<u8>>>,
    record: csv::ByteRecord,
    header: Vec<String>,
    keep: Vec<bool>,
    count: LineCount,
    /// A row handed back to [`Source::recycle`], to be filled again.
    spare: Option<Row>,
}

fn csv_parser() -> csv::Reader<std::io::Cursor<Vec<u8>>> {
    csv::ReaderBuilder::new()
        .flexible(true)
        .has_headers(false)
        .from_reader(std::io::Cursor::new(Vec::new()))
}

/// Whether a quoted field is still open at the end of `line`, by the csv crate's rules: a field
/// that starts with `"` is quoted until a `"` that is not doubled; a quote elsewhere is literal.
/// Such a line is not parsed: its quote would otherwise swallow the lines after it.
fn quote_left_open(line: &[u8]) -> bool {
    #[derive(PartialEq)]
    enum S {
        FieldStart,
        Plain,
        Quoted,
        QuoteInQuoted,
    }
    let mut s = S::FieldStart;
    for &b in line {
        s = match (s, b) {
            (S::FieldStart, b'"') | (S::QuoteInQuoted, b'"') => S::Quoted,
            (S::Quoted, b'"') => S::QuoteInQuoted,
            (S::Quoted, _) => S::Quoted,
            (_, b',') => S::FieldStart,
            _ => S::Plain,
        };
    }
    s == S::Quoted
}

impl<R: BufRead> CsvSource<R> {
    fn new(mut lines: Lines<R>) -> Result<Self, IngestError> {
        let bad_header = |file: &str, reason: String| IngestError::Header {
            file: file.into(),
            reason,
        };
        let mut skipped = 0;
        loop {
            if !lines.advance()? {
                return Err(bad_header(&lines.file, "the file has no header row".into()));
            }
            if !lines.is_blank() {
                break;
            }
            skipped += 1;
        }
        if quote_left_open(&lines.buf) {
            return Err(bad_header(&lines.file, "a quoted name is not closed".into()));
        }
        let mut src = CsvSource {
            lines,
            parser: csv_parser(),
            record: csv::ByteRecord::new(),
            header: Vec::new(),
            keep: Vec::new(),
            count: LineCount {
                read: skipped,
                blank: skipped,
            },
            spare: None,
        };
        src.parse_line()
            .map_err(|e| bad_header(&src.lines.file, e.to_string()))?;
        let names = csv::StringRecord::from_byte_record(src.record.clone())
            .map_err(|_| bad_header(&src.lines.file, "the header is not valid UTF-8".into()))?;
        src.header = names.iter().map(normalise_name).collect();
        let header = &src.header;
        if let Some((_, twice)) = header
            .iter()
            .enumerate()
            .find(|(i, h)| !h.is_empty() && header[..*i].contains(h))
        {
            return Err(bad_header(&src.lines.file, format!("column '{twice}' appears twice")));
        }
        src.keep = src.header.iter().map(|h| !is_personal(h)).collect();
        Ok(src)
    }

    /// Parses the current line (one record) into `self.record`.
    fn parse_line(&mut self) -> Result<(), csv::Error> {
        let cursor = self.parser.get_mut();
        std::mem::swap(cursor.get_mut(), &mut self.lines.buf);
        let parsed = self
            .parser
            .seek_raw(std::io::SeekFrom::Start(0), csv::Position::new())
            .and_then(|()| self.parser.read_byte_record(&mut self.record));
        std::mem::swap(self.parser.get_mut().get_mut(), &mut self.lines.buf);
        parsed.map(|_| ())
    }

    /// A row-level problem; its text is kept only when it cannot hold personal data, i.e. when
    /// the header has no personal-data column (an unaligned row cannot be redacted by column).
    fn bad(&self, reason: String, fields: Option<&[&str]>) -> Item {
        let raw = match fields {
            Some(f) if self.keep.iter().all(|k| *k) => f.join(","),
            _ => String::new(),
        };
        Item::Bad {
            line: self.lines.line,
            reason,
            raw,
        }
    }
}

impl<R: BufRead> Source for CsvSource<R> {
    fn columns(&self) -> Option<&[String]> {
        Some(&self.header)
    }

    fn recycle(&mut self, row: Row) {
        self.spare = Some(row);
    }

    fn dropped(&self) -> Vec<String> {
        self.header
            .iter()
            .zip(&self.keep)
            .filter(|(_, k)| !**k)
            .map(|(h, _)| h.clone())
            .collect()
    }

    fn lines(&self) -> LineCount {
        self.count
    }

    fn next_item(&mut self) -> Result<Option<Item>, IngestError> {
        loop {
            if !self.lines.advance()? {
                return Ok(None);
            }
            self.count.read += 1;
            if self.lines.is_blank() {
                self.count.blank += 1;
                continue;
            }
            if let Err(bad) = self.lines.text() {
                return Ok(Some(bad));
            }
            if quote_left_open(&self.lines.buf) {
                let reason = "a quoted field is not closed on this line (a value cannot span lines)";
                return Ok(Some(self.bad(reason.into(), None)));
            }
            if let Err(e) = self.parse_line() {
                return Ok(Some(self.bad(format!("unreadable CSV: {e}"), None)));
            }
            // The line is valid UTF-8, so every field is: the empty default is never taken.
            if self.record.len() != self.header.len() {
                let values: Vec<&str> = self
                    .record
                    .iter()
                    .map(|v| std::str::from_utf8(v).unwrap_or_default())
                    .collect();
                let reason = format!("row has {} fields, the header has {}", values.len(), self.header.len());
                return Ok(Some(self.bad(reason, Some(&values))));
            }
            // Filled in place: a recycled row keeps its strings' buffers.
            let mut row = self.spare.take().unwrap_or_default();
            row.line = self.lines.line;
            row.raw.clear();
            let mut kept = 0;
            for (i, ((name, keep), value)) in self.header.iter().zip(&self.keep).zip(self.record.iter()).enumerate() {
                let value = std::str::from_utf8(value).unwrap_or_default();
                if i > 0 {
                    row.raw.push(',');
                }
                row.raw.push_str(if *keep { value } else { "<redacted>" });
                if *keep {
                    match row.fields.get_mut(kept) {
                        Some((n, v)) => {
                            if n != name {
                                n.clear();
                                n.push_str(name);
                            }
                            v.clear();
                            v.push_str(value);
                        }
                        None => row.fields.push((name.clone(), value.to_owned())),
                    }
                    kept += 1;
                }
            }
            row.fields.truncate(kept);
            return Ok(Some(Item::Row(row)));
        }
    }
}

struct JsonlSource<R> {
    lines: Lines<R>,
    count: LineCount,
    dropped: Vec<String>,
}

impl<R: BufRead> Source for JsonlSource<R> {
    fn columns(&self) -> Option<&[String]> {
        None
    }

    fn dropped(&self) -> Vec<String> {
        self.dropped.clone()
    }

    fn lines(&self) -> LineCount {
        self.count
    }

    fn next_item(&mut self) -> Result<Option<Item>, IngestError> {
        loop {
            if !self.lines.advance()? {
                return Ok(None);
            }
            self.count.read += 1;
            if self.lines.is_blank() {
                self.count.blank += 1;
                continue;
            }
            let line = self.lines.line;
            let bad = |reason: String| {
                Ok(Some(Item::Bad {
                    line,
                    reason,
                    raw: String::new(),
                }))
            };
            let text = match self.lines.text() {
                Ok(t) => t,
                Err(bad) => return Ok(Some(bad)),
            };
            let map = match serde_json::from_str::<serde_json::Value>(text) {
                Ok(serde_json::Value::Object(map)) => map,
                Ok(_) => return bad("line is not a JSON object".into()),
                Err(e) => return bad(format!("invalid JSON: {e}")),
            };
            let mut fields = Vec::with_capacity(map.len());
            let mut kept = serde_json::Map::new();
            for (k, v) in map {
                let name = normalise_name(&k);
                if is_personal(&name) {
                    if !self.dropped.contains(&name) {
                        self.dropped.push(name);
                    }
                    continue;
                }
                let value = match &v {
                    serde_json::Value::Null => String::new(),
                    serde_json::Value::String(s) => s.clone(),
                    other => other.to_string(),
                };
                fields.push((name, value));
                kept.insert(k, v);
            }
            let raw = serde_json::Value::Object(kept).to_string();
            return Ok(Some(Item::Row(Row { line, fields, raw })));
        }
    }
}

fn cdnow_columns() -> Vec<String> {
    [
        "order_id",
        "customer_id",
        "event_time",
        "quantity",
        "amount",
        "currency",
    ]
    .map(String::from)
    .to_vec()
}

/// The header line of the full CDNOW log (four columns, no sample id).
const CDNOW_FULL_HEADER: [&str; 4] = ["customer_id", "date", "number_of_cds", "dollar_value"];

struct CdnowSource<R> {
    lines: Lines<R>,
    count: LineCount,
    /// The line of the full log's header; 0 when there is none (the sample).
    header_line: u64,
    columns: Vec<String>,
}

impl<R: BufRead> Source for CdnowSource<R> {
    fn columns(&self) -> Option<&[String]> {
        Some(&self.columns)
    }

    fn dropped(&self) -> Vec<String> {
        Vec::new()
    }

    fn lines(&self) -> LineCount {
        self.count
    }

    fn next_item(&mut self) -> Result<Option<Item>, IngestError> {
        loop {
            if !self.lines.advance()? {
                return Ok(None);
            }
            let line = self.lines.line;
            // CDNOW rows hold no personal data: the raw text is kept even when malformed.
            let raw = String::from_utf8_lossy(&self.lines.buf).trim().to_string();
            let parts: Vec<&str> = raw.split_whitespace().collect();
            let first_row = self.count.read == self.count.blank;
            if first_row && self.header_line == 0 && is_cdnow_header(&parts) {
                self.header_line = line;
                continue;
            }
            self.count.read += 1;
            if parts.is_empty() {
                self.count.blank += 1;
                continue;
            }
            if std::str::from_utf8(&self.lines.buf).is_err() {
                let reason = "not valid UTF-8".into();
                return Ok(Some(Item::Bad { line, reason, raw }));
            }
            // The sample has a leading original id; the full log does not.
            let (customer, date, quantity, amount) = match parts[..] {
                [_, c, d, q, a] | [c, d, q, a] => (c, d, q, a),
                _ => {
                    return Ok(Some(Item::Bad {
                        line,
                        reason: format!(
                            "expected 5 (sample) or 4 (full log) whitespace-separated columns, found {}",
                            parts.len()
                        ),
                        raw,
                    }))
                }
            };
            // Anything but YYYYMMDD goes to validation as it is, which rejects it.
            let event_time = if date.len() == 8 && date.bytes().all(|b| b.is_ascii_digit()) {
                format!("{}-{}-{}", &date[..4], &date[4..6], &date[6..])
            } else {
                date.to_string()
            };
            // CDNOW rows have no order id and some rows repeat exactly (distinct purchases), so
            // the id is the row's position counted from the first line after the header (if
            // any): re-ingesting the same file adds nothing, and both layouts of the same log
            // give the same ids.
            let fields = vec![
                ("order_id".into(), format!("cdnow-L{}", line - self.header_line)),
                ("customer_id".into(), customer.to_string()),
                ("event_time".into(), event_time),
                ("quantity".into(), quantity.to_string()),
                ("amount".into(), amount.to_string()),
                ("currency".into(), "USD".into()),
            ];
            return Ok(Some(Item::Row(Row { line, fields, raw })));
        }
    }
}

fn is_cdnow_header(parts: &[&str]) -> bool {
    parts.len() == CDNOW_FULL_HEADER.len() && parts.iter().zip(CDNOW_FULL_HEADER).all(|(p, h)| normalise_name(p) == h)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn items(format: Format, text: &'static str) -> Vec<Item> {
        let mut src = open(format, Box::new(text.as_bytes()), "t").expect("opens");
        let mut out = Vec::new();
        while let Some(i) = src.next_item().expect("reads") {
            out.push(i);
        }
        out
    }

    #[test]
    fn csv_drops_personal_columns_and_flags_ragged_rows() {
        let got = items(
            Format::Csv,
            "Customer_ID, Email ,event_time\nc1,a@b.c,2024-01-01\nc2,x\n",
        );
        let Item::Row(r) = &got[0] else {
            panic!("first row should parse")
        };
        assert_eq!(r.get("customer_id"), Some("c1"));
        assert_eq!(r.get("email"), None);
        assert!(
            !r.raw.contains("a@b.c"),
            "personal data reached the raw text: {}",
            r.raw
        );
        assert!(matches!(&got[1], Item::Bad { line: 3, reason, .. } if reason.contains("2 fields")));
    }

    #[test]
    fn a_recycled_csv_row_holds_only_the_next_lines_fields() {
        let text = "customer_id,email,channel,event_time\nc1,a@b.c,web,2024-01-01\nc2,,,2024-01-02\nc3,x\n";
        let mut src = open(Format::Csv, Box::new(text.as_bytes()), "t").expect("opens");
        let Some(Item::Row(first)) = src.next_item().expect("reads") else {
            panic!("first row should parse")
        };
        assert_eq!((first.get("channel"), first.line), (Some("web"), 2));
        src.recycle(first);
        let Some(Item::Row(second)) = src.next_item().expect("reads") else {
            panic!("second row should parse")
        };
        assert_eq!(second.line, 3);
        assert_eq!(second.get("customer_id"), Some("c2"));
        assert_eq!(second.get("channel"), None, "the first row's value is gone");
        assert_eq!(second.get("email"), None);
        assert_eq!(
            second.names().collect::<Vec<_>>(),
            ["customer_id", "channel", "event_time"]
        );
        assert_eq!(second.raw, "c2,<redacted>,,2024-01-02");
        src.recycle(second);
        assert!(matches!(
            src.next_item().expect("reads"),
            Some(Item::Bad { line: 4, .. })
        ));
    }

    #[test]
    fn jsonl_rows_and_bad_lines() {
        let got = items(
            Format::Jsonl,
            "{\"customer_id\":\"c1\",\"amount\":12.5,\"phone\":\"555\"}\n\nnot json\n[1]\n",
        );
        let Item::Row(r) = &got[0] else {
            panic!("first row should parse")
        };
        assert_eq!(r.get("amount"), Some("12.5"));
        assert!(!r.raw.contains("555"));
        assert!(matches!(&got[1], Item::Bad { line: 3, .. }));
        assert!(matches!(&got[2], Item::Bad { line: 4, .. }));
    }

    #[test]
    fn cdnow_rows_get_positional_order_ids() {
        let got = items(
            Format::Cdnow,
            " 00004 0001 19970101  2   29.33\n 00004 0001 19970101  2   29.33\nbad\n",
        );
        let ids: Vec<_> = got
            .iter()
            .filter_map(|i| match i {
                Item::Row(r) => r.get("order_id").map(String::from),
                Item::Bad { .. } => None,
            })
            .collect();
        assert_eq!(ids, ["cdnow-L1", "cdnow-L2"]);
        let Item::Row(r) = &got[0] else { panic!("row") };
        assert_eq!(r.get("event_time"), Some("1997-01-01"));
        assert!(matches!(&got[2], Item::Bad { line: 3, .. }));
    }

    #[test]
    fn cdnow_full_layout_numbers_rows_after_its_header() {
        let got = items(
            Format::Cdnow,
            "customer_id date number_of_cds dollar_value\n1 19970101 1 11.77\n\n2 19970102 2 3.00\n",
        );
        let rows: Vec<_> = got
            .iter()
            .filter_map(|i| match i {
                Item::Row(r) => Some((r.line, r.get("order_id"), r.get("customer_id"))),
                Item::Bad { .. } => None,
            })
            .collect();
        assert_eq!(
            rows,
            [(2, Some("cdnow-L1"), Some("1")), (4, Some("cdnow-L3"), Some("2"))]
        );
    }

    #[test]
    fn lines_end_at_lf_crlf_or_a_bare_cr_and_a_bom_is_skipped() {
        let text = "\u{feff}a\r\nb\rc\n\r\nd";
        let mut lines = Lines::new(text.as_bytes(), "t");
        let mut got = Vec::new();
        while lines.advance().expect("reads") {
            got.push((lines.line, String::from_utf8(lines.buf.clone()).expect("utf-8")));
        }
        let want = [(1, "a"), (2, "b"), (3, "c"), (4, ""), (5, "d")];
        assert_eq!(got, want.map(|(n, s)| (n, s.to_string())));
    }

    #[test]
    fn an_open_quote_is_found_as_csv_reads_quotes() {
        for (line, open) in [
            ("a,\"b", true),
            ("a,\"b\"\"", true),
            ("a,\"b\",c", false),
            ("a,\"b\"\"c\"", false),
            ("a,b\"c", false),
            ("\"a,b", true),
            ("a,\"b\"x\"", false),
        ] {
            assert_eq!(quote_left_open(line.as_bytes()), open, "{line}");
        }
    }
}
