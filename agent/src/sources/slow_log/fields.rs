//! The `Key: value` fields of slow-log headers and their JSON types. A
//! field the servers write has one type whatever its value: seconds are
//! always floats (`Query_time: 2` is 2.0), counters always integers, flags
//! and ids always strings (`InnoDB_trx_id: 1A2B3C` and `InnoDB_trx_id: 0`
//! alike). A value that does not parse as its field's type is kept, as
//! written, under `unparsed_fields` with the field's name as the server
//! wrote it, so the field itself never changes type. A field not in the
//! table is typed by its value (integer, decimal, else string).

use serde_json::Value;

use crate::record::Key;

#[derive(Debug, Clone, Copy, PartialEq)]
enum Kind {
    Seconds,
    Count,
    Text,
}

/// The record key and type of the fields MySQL 5.x-8.x, Percona Server and
/// MariaDB write (`sql/log.cc` of each), Percona's `log_slow_verbosity`
/// and MySQL 8's `log_slow_extra` included.
fn known(key: &str) -> Option<(&'static str, Kind)> {
    use Kind::*;
    Some(match key {
        "Query_time" => ("query_time", Seconds),
        "Lock_time" => ("lock_time", Seconds),
        "Rows_sent" => ("rows_sent", Count),
        "Rows_examined" => ("rows_examined", Count),
        "Rows_affected" => ("rows_affected", Count),
        "Rows_read" => ("rows_read", Count),
        "Id" | "Thread_id" => ("thread_id", Count),
        "Bytes_sent" => ("bytes_sent", Count),
        "Bytes_received" => ("bytes_received", Count),
        "Errno" => ("errno", Count),
        "Last_errno" => ("last_errno", Count),
        "Killed" => ("killed", Count),
        "Tmp_tables" => ("tmp_tables", Count),
        "Tmp_disk_tables" => ("tmp_disk_tables", Count),
        "Tmp_table_sizes" => ("tmp_table_sizes", Count),
        "Merge_passes" => ("merge_passes", Count),
        "Read_first" => ("read_first", Count),
        "Read_last" => ("read_last", Count),
        "Read_key" => ("read_key", Count),
        "Read_next" => ("read_next", Count),
        "Read_prev" => ("read_prev", Count),
        "Read_rnd" => ("read_rnd", Count),
        "Read_rnd_next" => ("read_rnd_next", Count),
        "Sort_merge_passes" => ("sort_merge_passes", Count),
        "Sort_range_count" => ("sort_range_count", Count),
        "Sort_rows" => ("sort_rows", Count),
        "Sort_scan_count" => ("sort_scan_count", Count),
        "Created_tmp_disk_tables" => ("created_tmp_disk_tables", Count),
        "Created_tmp_tables" => ("created_tmp_tables", Count),
        "Count_hit_tmp_table_size" => ("count_hit_tmp_table_size", Count),
        "InnoDB_IO_r_ops" => ("innodb_io_r_ops", Count),
        "InnoDB_IO_r_bytes" => ("innodb_io_r_bytes", Count),
        "InnoDB_IO_r_wait" => ("innodb_io_r_wait", Seconds),
        "InnoDB_rec_lock_wait" => ("innodb_rec_lock_wait", Seconds),
        "InnoDB_queue_wait" => ("innodb_queue_wait", Seconds),
        "InnoDB_pages_distinct" => ("innodb_pages_distinct", Count),
        "Log_slow_rate_limit" => ("log_slow_rate_limit", Count),
        "Pages_accessed" => ("pages_accessed", Count),
        "Pages_read" => ("pages_read", Count),
        "Pages_prefetched" => ("pages_prefetched", Count),
        "Pages_updated" => ("pages_updated", Count),
        "Undo_records_read" => ("undo_records_read", Count),
        "Old_rows_read" => ("old_rows_read", Count),
        "Pages_read_time" => ("pages_read_time", Seconds),
        "Engine_time" => ("engine_time", Seconds),
        "Max_statement_time_exceeded" => ("max_statement_time_exceeded", Text),
        "InnoDB_trx_id" => ("innodb_trx_id", Text),
        "QC_Hit" | "QC_hit" => ("qc_hit", Text),
        "Full_scan" => ("full_scan", Text),
        "Full_join" => ("full_join", Text),
        "Tmp_table" => ("tmp_table", Text),
        "Tmp_table_on_disk" => ("tmp_table_on_disk", Text),
        "Filesort" => ("filesort", Text),
        "Filesort_on_disk" => ("filesort_on_disk", Text),
        "Priority_queue" => ("priority_queue", Text),
        "Log_slow_rate_type" => ("log_slow_rate_type", Text),
        "Start" => ("start", Text),
        "End" => ("end", Text),
        _ => return None,
    })
}

/// A header field as it goes into the record.
pub enum Typed {
    /// Record key and value.
    Field(Key, Value),
    /// The value does not parse as the field's type: keep the raw text
    /// under `unparsed_fields`.
    Unparsed,
}

pub fn typed(key: &str, raw: &str) -> Typed {
    let Some((name, kind)) = known(key) else {
        return Typed::Field(Key::Owned(key.to_ascii_lowercase()), inferred(raw));
    };
    let value = match kind {
        Kind::Text => Some(Value::String(raw.to_string())),
        Kind::Count => integer(raw),
        Kind::Seconds => seconds(raw),
    };
    match value {
        Some(v) => Typed::Field(Key::Static(name), v),
        None => Typed::Unparsed,
    }
}

fn seconds(raw: &str) -> Option<Value> {
    let f = match decimal(raw) {
        Some(f) => f,
        // f64's parser also takes `inf`, `NaN` and `1e5`; the servers
        // write plain decimals only.
        None if !raw.is_empty() && raw.bytes().all(|b| b.is_ascii_digit() || b == b'.') => {
            raw.parse::<f64>().ok()?
        }
        None => return None,
    };
    serde_json::Number::from_f64(f).map(Value::Number)
}

/// `digits[.digits]` with at most 15 significant digits, the servers'
/// `0.000012`: the digits as an integer divided by a power of ten, both
/// exact in an f64, so the one division rounds correctly, as `str::parse`
/// does (which goes this way too, after its general scan). None for
/// anything else, which `str::parse` reads. One pass over the bytes: two
/// fields of every entry are seconds, and checking, splitting and folding
/// them in turn cost three.
fn decimal(raw: &str) -> Option<f64> {
    const POW10: [f64; 16] = [
        1e0, 1e1, 1e2, 1e3, 1e4, 1e5, 1e6, 1e7, 1e8, 1e9, 1e10, 1e11, 1e12, 1e13, 1e14, 1e15,
    ];
    let b = raw.as_bytes();
    // Fifteen digits and a point at most (so `n` cannot overflow).
    if b.len() > 16 {
        return None;
    }
    let (mut n, mut point) = (0u64, None);
    for (i, &c) in b.iter().enumerate() {
        if c.is_ascii_digit() {
            n = n * 10 + u64::from(c - b'0');
        } else if c == b'.' && point.is_none() && i > 0 {
            point = Some(i);
        } else {
            return None;
        }
    }
    let digits = b.len() - usize::from(point.is_some());
    if digits == 0 || digits > 15 {
        return None;
    }
    let frac = point.map_or(0, |p| b.len() - p - 1);
    Some(n as f64 / POW10[frac])
}

/// An integer as `str::parse` reads it (a sign allowed), into i64 or else
/// u64; plain digits, what the servers write, without its generic loop.
fn integer(raw: &str) -> Option<Value> {
    if let Some(n) = super::grammar::digits(raw) {
        return Some(Value::from(n));
    }
    raw.parse::<i64>()
        .map(Value::from)
        .or_else(|_| raw.parse::<u64>().map(Value::from))
        .ok()
}

fn inferred(v: &str) -> Value {
    if let Some(n) = super::grammar::digits(v) {
        return Value::from(n);
    }
    if let Ok(i) = v.parse::<i64>() {
        return Value::from(i);
    }
    if super::grammar::find(v, b'.').is_some() {
        if let Some(n) = seconds(v) {
            return n;
        }
    }
    Value::String(v.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn field(key: &str, raw: &str) -> Option<(String, Value)> {
        match typed(key, raw) {
            Typed::Field(k, v) => Some((String::from(k), v)),
            Typed::Unparsed => None,
        }
    }

    #[test]
    fn one_type_per_field_whatever_the_value() {
        assert_eq!(
            field("Query_time", "2"),
            Some(("query_time".into(), Value::from(2.0)))
        );
        assert!(field("Query_time", "2").unwrap().1.is_f64());
        assert!(field("Lock_time", "0.000036").unwrap().1.is_f64());
        assert_eq!(
            field("Rows_examined", "127"),
            Some(("rows_examined".into(), Value::from(127)))
        );
        assert_eq!(
            field("InnoDB_trx_id", "0"),
            Some(("innodb_trx_id".into(), Value::from("0")))
        );
        assert_eq!(
            field("QC_Hit", "No"),
            Some(("qc_hit".into(), Value::from("No")))
        );
        assert_eq!(field("Id", "3"), Some(("thread_id".into(), Value::from(3))));
        assert_eq!(
            field("Rows_examined", "18446744073709551615").map(|f| f.1),
            Some(Value::from(u64::MAX))
        );
    }

    #[test]
    fn seconds_are_read_as_str_parse_reads_them() {
        let mut cases: Vec<String> = [
            "0",
            "2",
            "0.000012",
            "0.000002",
            "1.5",
            "10.000000",
            "123456.789012",
            "999999999999999",
            "99999999999999.9",
            "0.123456789012345",
            "1234567890123456",
            "0.1234567890123456",
            "5.",
            ".5",
            ".",
            "",
            "1.2.3",
            "00000000000000000001.5",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        // Every count of digits on both sides of the point.
        for int in 0..18 {
            for frac in 0..18 {
                cases.push(format!("{}.{}", "7".repeat(int), "3".repeat(frac)));
            }
        }
        for raw in cases {
            let parsed = (!raw.is_empty() && raw.bytes().all(|b| b.is_ascii_digit() || b == b'.'))
                .then(|| raw.parse::<f64>().ok())
                .flatten();
            let got = match field("Query_time", &raw) {
                Some((_, v)) => v.as_f64(),
                None => None,
            };
            assert_eq!(got.map(f64::to_bits), parsed.map(f64::to_bits), "{raw:?}");
        }
    }

    #[test]
    fn counts_are_read_as_str_parse_reads_them() {
        for raw in [
            "0",
            "007",
            "123456789012345678",
            "9223372036854775807",
            "9223372036854775808",
            "18446744073709551615",
            "18446744073709551616",
            "+5",
            "-5",
            "",
            "1 ",
            "1_000",
        ] {
            let parsed = raw
                .parse::<i64>()
                .map(Value::from)
                .or_else(|_| raw.parse::<u64>().map(Value::from))
                .ok();
            assert_eq!(field("Rows_sent", raw).map(|f| f.1), parsed, "{raw:?}");
        }
    }

    #[test]
    fn values_that_do_not_parse_are_set_aside() {
        for (key, raw) in [
            ("Query_time", "18446744073708.796870.000036"),
            ("Query_time", "abc"),
            ("Query_time", "inf"),
            ("Query_time", ""),
            ("Rows_sent", "1.5"),
            ("Rows_examined", "-"),
        ] {
            assert!(field(key, raw).is_none(), "{key}: {raw:?}");
        }
    }

    #[test]
    fn unknown_fields_typed_by_value() {
        assert_eq!(
            field("Foo_count", "7"),
            Some(("foo_count".into(), Value::from(7)))
        );
        assert_eq!(
            field("Foo_time", "0.5"),
            Some(("foo_time".into(), Value::from(0.5)))
        );
        assert_eq!(
            field("Client", "127.0.0.1:12345"),
            Some(("client".into(), Value::from("127.0.0.1:12345")))
        );
    }
}
