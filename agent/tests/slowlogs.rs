//! The slow-log parser on the 72 real slow logs from percona-toolkit in
//! ../shared/slowlogs (read in place, never copied): every file parses
//! without a panic, and a handful of fields are checked by hand against the
//! files.

use std::io::Read;
use std::path::PathBuf;

#[path = "../src/event.rs"]
#[allow(dead_code)]
mod event;

// The parser is pure (no I/O, no agent state): compiled in here directly.
#[path = "../src/sources/slow_log.rs"]
#[allow(dead_code)]
mod slow_log;

use slow_log::parse_all;

fn dir() -> PathBuf {
    PathBuf::from(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../shared/slowlogs/percona-toolkit"
    ))
}

fn read(name: &str) -> String {
    let path = dir().join(name);
    let bytes = std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let bytes = if name.ends_with(".gz") {
        let mut out = Vec::new();
        flate2::read::MultiGzDecoder::new(&bytes[..])
            .read_to_end(&mut out)
            .unwrap();
        out
    } else {
        bytes
    };
    String::from_utf8_lossy(&bytes).into_owned()
}

#[test]
fn every_shared_slow_log_parses() {
    let mut files = 0;
    let mut entries = 0;
    for entry in std::fs::read_dir(dir()).expect("../shared/slowlogs beside the clone") {
        let name = entry.unwrap().file_name().to_string_lossy().into_owned();
        if name == "COPYING" {
            continue;
        }
        let parsed = parse_all(&read(&name), 1 << 20);
        for e in &parsed {
            assert!(
                e.record.contains_key("sql") || e.record.contains_key("command"),
                "{name}: {e:?}"
            );
        }
        entries += parsed.len();
        files += 1;
    }
    assert_eq!(files, 72);
    println!("{files} files, {entries} entries");
    assert!(entries > 1000, "{entries}");
}

#[test]
fn fields_checked_by_hand() {
    // slow002.txt: old Percona format, `# Time:` and `# User@Host:` on one line.
    let e = parse_all(&read("slow002.txt"), 1 << 20);
    assert_eq!(e[0].record["user"], "SQL_SLAVE");
    assert_eq!(e[0].record["thread_id"], 10);
    assert_eq!(e[0].record["sql"], "BEGIN;");
    assert_eq!(e[0].time, slow_log::parse_time("071218 11:48:27"));
    assert_eq!(e[1].record["db"], "db1");
    assert_eq!(e[1].record["rows_examined"], 62951);
    assert_eq!(e[1].record["full_scan"], "Yes");
    assert!(e[1].record["sql"]
        .as_str()
        .unwrap()
        .starts_with("update db2.tuningdetail_21_265507 n\n"));
    assert_eq!(
        e[1].record["timestamp"], "2007-12-18T16:48:27.000Z",
        "from SET timestamp=1197996507"
    );
    assert_eq!(e[2].record["innodb_pages_distinct"], 24);

    // mysql5.7.log: banners skipped, ISO times, Id.
    let e = parse_all(&read("mysql5.7.log"), 1 << 20);
    assert_eq!(e[0].record["user"], "root");
    assert_eq!(e[0].record["host"], "localhost");
    assert_eq!(e[0].record["host_ip"], "127.0.0.1");
    assert_eq!(e[0].record["thread_id"], 3);
    assert_eq!(e[0].record["rows_sent"], 1000);
    assert_eq!(
        e[0].record["sql"],
        "SELECT * FROM db_facturacion.facturas LIMIT 0, 1000;"
    );
    assert!(e.iter().all(|x| !x.record["sql"]
        .as_str()
        .unwrap_or("")
        .contains("started with")));

    // slow-pt-243.txt: `Schema: ` empty and an administrator command.
    let e = parse_all(&read("slow-pt-243.txt"), 1 << 20);
    assert_eq!(e[0].record["command"], "Refresh");
    assert_eq!(e[0].record["host"], "alonghotnamelikelocalhost");
    assert!(e[0].record.get("db").is_none());

    // slow033.txt: `use db2;` carries to later entries of the stream.
    let e = parse_all(&read("slow033.txt"), 1 << 20);
    assert_eq!(e[0].record["db"], "db1");
    assert_eq!(e[3].record["db"], "db2");
}
