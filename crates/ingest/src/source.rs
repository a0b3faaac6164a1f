//! Reading input files into rows of named fields, whatever the format.

use std::io::{BufRead, Read};

use crate::IngestError;

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Format {
    Csv,
    Jsonl,
    /// The CDNOW transaction log: whitespace separated original id, customer id,
    /// YYYYMMDD, quantity, dollar value. Orders only.
    Cdnow,
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
}

pub fn open<'r>(
    format: Format,
    reader: Box<dyn Read + Send + 'r>,
    file: &str,
) -> Result<Box<dyn Source + Send + 'r>, IngestError> {
    Ok(match format {
        Format::Csv => Box::new(CsvSource::new(reader, file)?),
        Format::Jsonl => Box::new(JsonlSource {
            lines: std::io::BufReader::new(reader),
            line: 0,
            dropped: Vec::new(),
            file: file.into(),
        }),
        Format::Cdnow => Box::new(CdnowSource {
            lines: std::io::BufReader::new(reader),
            line: 0,
            file: file.into(),
            columns: cdnow_columns(),
        }),
    })
}

struct CsvSource<'r> {
    reader: csv::Reader<Box<dyn Read + Send + 'r>>,
    header: Vec<String>,
    keep: Vec<bool>,
    record: csv::StringRecord,
    file: String,
}

impl<'r> CsvSource<'r> {
    fn new(reader: Box<dyn Read + Send + 'r>, file: &str) -> Result<Self, IngestError> {
        let mut reader = csv::ReaderBuilder::new()
            .flexible(true)
            .has_headers(true)
            .from_reader(reader);
        let header: Vec<String> = reader
            .headers()
            .map_err(|e| IngestError::Header {
                file: file.into(),
                reason: e.to_string(),
            })?
            .iter()
            .map(normalise_name)
            .collect();
        if header.iter().all(|h| h.is_empty()) {
            return Err(IngestError::Header {
                file: file.into(),
                reason: "the file has no header row".into(),
            });
        }
        let keep = header.iter().map(|h| !is_personal(h)).collect();
        Ok(CsvSource {
            reader,
            header,
            keep,
            record: csv::StringRecord::new(),
            file: file.into(),
        })
    }
}

impl Source for CsvSource<'_> {
    fn columns(&self) -> Option<&[String]> {
        Some(&self.header)
    }

    fn dropped(&self) -> Vec<String> {
        self.header
            .iter()
            .zip(&self.keep)
            .filter(|(_, k)| !**k)
            .map(|(h, _)| h.clone())
            .collect()
    }

    fn next_item(&mut self) -> Result<Option<Item>, IngestError> {
        match self.reader.read_record(&mut self.record) {
            Ok(false) => Ok(None),
            Ok(true) => {
                let line = self.record.position().map_or(0, |p| p.line());
                let redacted: Vec<&str> = self
                    .record
                    .iter()
                    .zip(self.keep.iter().chain(std::iter::repeat(&true)))
                    .map(|(v, k)| if *k { v } else { "<redacted>" })
                    .collect();
                let raw = redacted.join(",");
                if self.record.len() != self.header.len() {
                    return Ok(Some(Item::Bad {
                        line,
                        reason: format!(
                            "row has {} fields, the header has {}",
                            self.record.len(),
                            self.header.len()
                        ),
                        raw,
                    }));
                }
                let fields = self
                    .header
                    .iter()
                    .zip(&self.keep)
                    .zip(self.record.iter())
                    .filter(|((_, k), _)| **k)
                    .map(|((h, _), v)| (h.clone(), v.to_string()))
                    .collect();
                Ok(Some(Item::Row(Row { line, fields, raw })))
            }
            Err(e) => match e.kind() {
                csv::ErrorKind::Utf8 { pos, err } => Ok(Some(Item::Bad {
                    line: pos.as_ref().map_or(0, |p| p.line()),
                    reason: format!("field {} is not valid UTF-8", err.field() + 1),
                    raw: String::new(),
                })),
                _ => Err(IngestError::Read {
                    file: self.file.clone(),
                    reason: e.to_string(),
                }),
            },
        }
    }
}

struct JsonlSource<R> {
    lines: R,
    line: u64,
    dropped: Vec<String>,
    file: String,
}

fn read_line(lines: &mut impl BufRead, buf: &mut Vec<u8>, file: &str) -> Result<bool, IngestError> {
    buf.clear();
    let n = lines.read_until(b'\n', buf).map_err(|e| IngestError::Read {
        file: file.into(),
        reason: e.to_string(),
    })?;
    Ok(n > 0)
}

impl<R: BufRead> Source for JsonlSource<R> {
    fn columns(&self) -> Option<&[String]> {
        None
    }

    fn dropped(&self) -> Vec<String> {
        self.dropped.clone()
    }

    fn next_item(&mut self) -> Result<Option<Item>, IngestError> {
        let mut buf = Vec::new();
        loop {
            if !read_line(&mut self.lines, &mut buf, &self.file)? {
                return Ok(None);
            }
            self.line += 1;
            let Ok(text) = std::str::from_utf8(&buf) else {
                return Ok(Some(Item::Bad {
                    line: self.line,
                    reason: "line is not valid UTF-8".into(),
                    raw: String::new(),
                }));
            };
            let text = text.trim();
            if text.is_empty() {
                continue;
            }
            let map = match serde_json::from_str::<serde_json::Value>(text) {
                Ok(serde_json::Value::Object(map)) => map,
                Ok(_) => {
                    return Ok(Some(Item::Bad {
                        line: self.line,
                        reason: "line is not a JSON object".into(),
                        raw: String::new(),
                    }))
                }
                Err(e) => {
                    return Ok(Some(Item::Bad {
                        line: self.line,
                        reason: format!("invalid JSON: {e}"),
                        raw: String::new(),
                    }))
                }
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
            return Ok(Some(Item::Row(Row {
                line: self.line,
                fields,
                raw,
            })));
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

struct CdnowSource<R> {
    lines: R,
    line: u64,
    file: String,
    columns: Vec<String>,
}

impl<R: BufRead> Source for CdnowSource<R> {
    fn columns(&self) -> Option<&[String]> {
        Some(&self.columns)
    }

    fn dropped(&self) -> Vec<String> {
        Vec::new()
    }

    fn next_item(&mut self) -> Result<Option<Item>, IngestError> {
        let mut buf = Vec::new();
        loop {
            if !read_line(&mut self.lines, &mut buf, &self.file)? {
                return Ok(None);
            }
            self.line += 1;
            let raw = String::from_utf8_lossy(&buf).trim_end().to_string();
            let parts: Vec<&str> = raw.split_whitespace().collect();
            if parts.is_empty() {
                continue;
            }
            if parts.len() != 5 {
                return Ok(Some(Item::Bad {
                    line: self.line,
                    reason: format!("expected 5 whitespace-separated columns, found {}", parts.len()),
                    raw,
                }));
            }
            let d = parts[2];
            let date = if d.len() == 8 {
                format!("{}-{}-{}", &d[..4], &d[4..6], &d[6..])
            } else {
                d.to_string()
            };
            // CDNOW rows have no order id and some rows repeat exactly (distinct purchases),
            // so the id is the row's position: re-ingesting the same file adds nothing.
            let fields = vec![
                ("order_id".into(), format!("cdnow-L{}", self.line)),
                ("customer_id".into(), parts[1].to_string()),
                ("event_time".into(), date),
                ("quantity".into(), parts[3].to_string()),
                ("amount".into(), parts[4].to_string()),
                ("currency".into(), "USD".into()),
            ];
            return Ok(Some(Item::Row(Row {
                line: self.line,
                fields,
                raw,
            })));
        }
    }
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
}
