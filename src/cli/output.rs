//! How results are shown: aligned tables for people, JSON for scripts.

use std::io::Write;

use serde_json::Value;

/// Columns padded to their widest cell, two spaces apart.
pub struct Table {
    headers: Vec<String>,
    rows: Vec<Vec<String>>,
}

impl Table {
    pub fn new(headers: &[&str]) -> Table {
        Table { headers: headers.iter().map(|h| h.to_string()).collect(), rows: Vec::new() }
    }

    pub fn row(&mut self, cells: Vec<String>) {
        assert_eq!(cells.len(), self.headers.len(), "a row has a cell for every column");
        self.rows.push(cells);
    }

    pub fn is_empty(&self) -> bool {
        self.rows.is_empty()
    }

    pub fn render(&self) -> String {
        let mut widths: Vec<usize> = self.headers.iter().map(|h| h.chars().count()).collect();
        for row in &self.rows {
            for (w, cell) in widths.iter_mut().zip(row) {
                *w = (*w).max(cell.chars().count());
            }
        }
        let mut out = String::new();
        for row in std::iter::once(&self.headers).chain(&self.rows) {
            let mut line = String::new();
            for (i, (cell, w)) in row.iter().zip(&widths).enumerate() {
                if i + 1 == row.len() {
                    line.push_str(cell);
                } else {
                    line.push_str(&format!("{cell:<w$}  "));
                }
            }
            out.push_str(line.trim_end());
            out.push('\n');
        }
        out
    }

    pub fn print(&self) {
        print_text(&self.render());
    }
}

/// Writes `text` to stdout as it is.
pub fn print_text(text: &str) {
    let mut stdout = std::io::stdout().lock();
    // A closed stdout ends the process through SIGPIPE (see `cli::run`); nothing else to do.
    let _ = stdout.write_all(text.as_bytes()).and_then(|()| stdout.flush());
}

pub fn print_json(value: &Value) {
    let text = serde_json::to_string_pretty(value).unwrap_or_else(|_| "null".into());
    print_text(&(text + "\n"));
}

/// Prints several described things (topics, groups): one JSON array, or their text blocks
/// separated by blank lines.
pub fn print_described(described: Vec<(Value, String)>, json: bool) {
    let (documents, texts): (Vec<Value>, Vec<String>) = described.into_iter().unzip();
    if json {
        print_json(&Value::Array(documents));
    } else {
        print_text(&texts.join("\n"));
    }
}

/// Bytes as JSON: null, a string when they are UTF-8, else `{"base64": ...}`.
pub fn bytes_json(bytes: Option<&[u8]>) -> Value {
    match bytes {
        None => Value::Null,
        Some(b) => match std::str::from_utf8(b) {
            Ok(s) => Value::String(s.to_string()),
            Err(_) => serde_json::json!({ "base64": base64(b) }),
        },
    }
}

/// Standard base64 with padding.
pub fn base64(data: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(data.len().div_ceil(3) * 4);
    for chunk in data.chunks(3) {
        let b = [chunk[0], *chunk.get(1).unwrap_or(&0), *chunk.get(2).unwrap_or(&0)];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(ALPHABET[(n >> (18 - 6 * i)) as usize & 63] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// Milliseconds since the epoch as `2024-05-01T12:00:00.000Z`; negative values as they are.
pub fn format_timestamp(ms: i64) -> String {
    if ms < 0 {
        return ms.to_string();
    }
    let (days, ms_of_day) = (ms.div_euclid(86_400_000), ms.rem_euclid(86_400_000));
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    let (h, m, s, milli) =
        (ms_of_day / 3_600_000, ms_of_day / 60_000 % 60, ms_of_day / 1000 % 60, ms_of_day % 1000);
    format!("{year:04}-{month:02}-{day:02}T{h:02}:{m:02}:{s:02}.{milli:03}Z")
}

/// Reads `2024-05-01T12:00:00Z` (optional `.mmm`, `Z` or `±hh:mm`, or a date alone), or a number
/// of milliseconds since the epoch, into milliseconds since the epoch.
pub fn parse_timestamp(s: &str) -> Result<i64, String> {
    let s = s.trim();
    if let Ok(ms) = s.parse::<i64>() {
        return Ok(ms);
    }
    let bad = || format!("{s:?} is not a time like 2024-05-01T12:00:00Z or milliseconds since the epoch");
    let (date, rest) = s.split_at(s.find('T').unwrap_or(s.len()));
    let parts: Vec<i64> = date.split('-').map(|p| p.parse().map_err(|_| bad())).collect::<Result<_, _>>()?;
    let [year, month, day] = parts[..] else { return Err(bad()) };
    if !(1..=12).contains(&month) || !(1..=31).contains(&day) {
        return Err(bad());
    }
    let mut ms_of_day = 0;
    let mut offset_ms = 0;
    if let Some(time) = rest.strip_prefix('T') {
        let (clock, zone) = match time.find(['Z', '+', '-']) {
            Some(i) => time.split_at(i),
            None => (time, ""),
        };
        let (hms, frac) = clock.split_once('.').unwrap_or((clock, "0"));
        let hms: Vec<i64> = hms.split(':').map(|p| p.parse().map_err(|_| bad())).collect::<Result<_, _>>()?;
        let (h, m, sec) = match hms[..] {
            [h, m] => (h, m, 0),
            [h, m, sec] => (h, m, sec),
            _ => return Err(bad()),
        };
        let frac_ms: i64 = format!("{frac:0<3}")[..3].parse().map_err(|_| bad())?;
        ms_of_day = ((h * 60 + m) * 60 + sec) * 1000 + frac_ms;
        if let Some(z) = zone.strip_prefix(['+', '-']) {
            let (zh, zm) = z.split_once(':').unwrap_or((z, "0"));
            let minutes =
                zh.parse::<i64>().map_err(|_| bad())? * 60 + zm.parse::<i64>().map_err(|_| bad())?;
            offset_ms = minutes * 60_000 * if zone.starts_with('-') { -1 } else { 1 };
        } else if !zone.is_empty() && zone != "Z" {
            return Err(bad());
        }
    }
    // Days from civil date (Howard Hinnant's algorithm).
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (month + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    Ok(days * 86_400_000 + ms_of_day - offset_ms)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tables_align() {
        let mut t = Table::new(&["NAME", "PARTITIONS"]);
        t.row(vec!["orders".into(), "3".into()]);
        t.row(vec!["a".into(), "12".into()]);
        assert_eq!(t.render(), "NAME    PARTITIONS\norders  3\na       12\n");
    }

    #[test]
    fn base64_pads() {
        assert_eq!(base64(b""), "");
        assert_eq!(base64(b"f"), "Zg==");
        assert_eq!(base64(b"fo"), "Zm8=");
        assert_eq!(base64(b"foo"), "Zm9v");
        assert_eq!(base64(&[0xff, 0xfe]), "//4=");
        assert_eq!(bytes_json(Some(&[0xff])), serde_json::json!({"base64": "/w=="}));
        assert_eq!(bytes_json(Some(b"hi")), serde_json::json!("hi"));
    }

    #[test]
    fn timestamps_round_trip() {
        assert_eq!(format_timestamp(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(format_timestamp(1_700_000_000_123), "2023-11-14T22:13:20.123Z");
        assert_eq!(parse_timestamp("2023-11-14T22:13:20.123Z"), Ok(1_700_000_000_123));
        assert_eq!(parse_timestamp("2023-11-14T23:13:20+01:00"), Ok(1_700_000_000_000));
        assert_eq!(parse_timestamp("2024-02-29"), Ok(1_709_164_800_000));
        assert_eq!(parse_timestamp("1700000000000"), Ok(1_700_000_000_000));
        assert!(parse_timestamp("yesterday").is_err());
        assert!(parse_timestamp("2024-13-01").is_err());
    }
}
