//! The forward protocol's real peers, run in place from `../shared/tools`
//! (never copied into the project): fluent-bit 5.1.1 and Fluentd 1.15.3
//! (on Debian's Ruby). Each is a child process killed on drop; what they
//! receive is read back from the files their `file` outputs write, with
//! tag, time to the nanosecond and record.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// `../shared/tools` beside the clone.
pub fn shared_tools() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../../shared/tools")
}

pub fn fluent_bit_binary() -> PathBuf {
    shared_tools().join("fluent-bit/fluent-bit")
}

/// Where `Peer::fluent_bit_counting` writes fluent-bit's stdout.
const COUNTER_OUT: &str = "counter.out";

/// One event as a peer wrote it.
#[derive(Debug, Clone, PartialEq)]
pub struct Received {
    pub tag: String,
    /// Nanoseconds since the epoch.
    pub time: i64,
    pub record: serde_json::Value,
}

pub struct Peer {
    child: Child,
    pub log: PathBuf,
    pub dir: PathBuf,
}

impl Peer {
    /// fluent-bit with `config` (classic format) written to `dir`.
    pub fn fluent_bit(dir: &Path, config: &str) -> Peer {
        Peer::spawn_fluent_bit(
            dir,
            config,
            Command::new(fluent_bit_binary()),
            Stdio::null(),
        )
    }

    /// `fluent_bit` whose stdout, where a `counter` output writes a JSON
    /// line per flush, goes to `dir/counter.out` line by line (`stdbuf
    /// -oL`: to a file it is otherwise block-buffered and shows up only at
    /// exit); `counted` sums it.
    pub fn fluent_bit_counting(dir: &Path, config: &str) -> Peer {
        std::fs::create_dir_all(dir).unwrap();
        let out = std::fs::File::create(dir.join(COUNTER_OUT)).unwrap();
        let mut stdbuf = Command::new("stdbuf");
        stdbuf.arg("-oL").arg(fluent_bit_binary());
        Peer::spawn_fluent_bit(dir, config, stdbuf, out.into())
    }

    /// Records the `counter` output of a `fluent_bit_counting` peer has
    /// counted so far.
    pub fn counted(&self) -> u64 {
        let text = std::fs::read_to_string(self.dir.join(COUNTER_OUT)).unwrap_or_default();
        text.split_inclusive('\n')
            .filter(|line| line.ends_with('\n'))
            .filter_map(|line| {
                let (_, rest) = line.split_once("\"log_records\":")?;
                let digits = rest.find(|c: char| !c.is_ascii_digit())?;
                rest[..digits].parse::<u64>().ok()
            })
            .sum()
    }

    fn spawn_fluent_bit(dir: &Path, config: &str, mut command: Command, stdout: Stdio) -> Peer {
        std::fs::create_dir_all(dir).unwrap();
        let conf = dir.join("fluent-bit.conf");
        std::fs::write(&conf, config).unwrap();
        let log = dir.join("fluent-bit.log");
        let child = command
            .arg("-c")
            .arg(&conf)
            .arg("-l")
            .arg(&log)
            .stdin(Stdio::null())
            .stdout(stdout)
            .stderr(Stdio::null())
            .spawn()
            .expect("../shared/tools/fluent-bit/fluent-bit runs");
        Peer {
            child,
            log,
            dir: dir.to_path_buf(),
        }
    }

    /// Fluentd with `config` written to `dir`; returns once its worker
    /// runs (it takes 2-6 s to start).
    pub fn fluentd(dir: &Path, config: &str) -> Peer {
        std::fs::create_dir_all(dir).unwrap();
        let conf = dir.join("fluent.conf");
        std::fs::write(&conf, config).unwrap();
        let log = dir.join("fluentd.log");
        let mut cmd = Command::new(shared_tools().join("fluentd/run.sh"));
        // ServerEngine's socket manager makes a unix socket in /tmp, and a
        // Fluentd that is killed leaves it there: one more
        // SERVERENGINE_SOCKETMANAGER_* in /tmp per test run. In the peer's
        // own directory it goes with the test's. (A unix socket's path is at
        // most 107 bytes and the socket's name takes 53.)
        if dir.as_os_str().len() <= 50 {
            cmd.env("SERVERENGINE_SOCKETMANAGER_SOCK_DIR", dir);
        }
        let child = cmd
            .arg("-c")
            .arg(&conf)
            .arg("--no-supervisor")
            .arg("-o")
            .arg(&log)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("../shared/tools/fluentd/run.sh runs");
        let peer = Peer {
            child,
            log,
            dir: dir.to_path_buf(),
        };
        let started = Instant::now();
        while !peer.log_text().contains("fluentd worker is now running") {
            assert!(
                started.elapsed() < Duration::from_secs(60),
                "Fluentd did not start in 60 s: {}",
                peer.log_text()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        peer
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Waits up to `timeout` for the peer to exit by itself; false if it
    /// still runs.
    pub fn wait_exit(&mut self, timeout: Duration) -> bool {
        let t0 = Instant::now();
        while t0.elapsed() < timeout {
            if let Ok(Some(_)) = self.child.try_wait() {
                return true;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        false
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    pub fn kill9(&mut self) {
        // SAFETY: kill(2) on our own child's pid.
        unsafe {
            libc::kill(self.child.id() as i32, libc::SIGKILL);
        }
        let _ = self.child.wait();
    }

    pub fn stop(&mut self) {
        // SAFETY: kill(2) on our own child's pid.
        unsafe {
            libc::kill(self.child.id() as i32, libc::SIGTERM);
        }
        let _ = self.child.wait();
    }
}

impl Drop for Peer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The events in fluent-bit `file` output files (its default `out_file`
/// format: `tag: [seconds.nanoseconds, {record}]` per line) under `dir`.
pub fn read_fluent_bit_files(dir: &Path) -> Vec<Received> {
    let mut out = Vec::new();
    for path in files_in(dir) {
        let text = std::fs::read_to_string(&path).unwrap_or_default();
        for line in text.lines() {
            // A line still being written is skipped until it is whole.
            let Some((tag, rest)) = line.split_once(": [") else {
                continue;
            };
            let Some((time, record)) = rest.split_once(", ") else {
                continue;
            };
            let Some(record) = record.strip_suffix(']') else {
                continue;
            };
            let Ok(record) = serde_json::from_str(record) else {
                continue;
            };
            out.push(Received {
                tag: tag.to_string(),
                time: seconds_dot_nanos(time),
                record,
            });
        }
    }
    out
}

/// The events in Fluentd `file` output files under `dir`, written as JSON
/// lines with the tag in `tag` and the time in `time` as `%s.%N`.
pub fn read_fluentd_files(dir: &Path) -> Vec<Received> {
    let mut out = Vec::new();
    for path in files_in(dir) {
        let text = std::fs::read_to_string(&path).unwrap_or_default();
        for line in text.lines() {
            let Ok(serde_json::Value::Object(mut record)) = serde_json::from_str(line) else {
                continue;
            };
            let tag = record
                .remove("tag")
                .and_then(|t| t.as_str().map(String::from));
            let time = record
                .remove("time")
                .and_then(|t| t.as_str().map(seconds_dot_nanos));
            if let (Some(tag), Some(time)) = (tag, time) {
                out.push(Received {
                    tag,
                    time,
                    record: serde_json::Value::Object(record),
                });
            }
        }
    }
    out
}

fn seconds_dot_nanos(s: &str) -> i64 {
    let (secs, frac) = s.split_once('.').unwrap_or((s, "0"));
    let mut nanos = frac.to_string();
    nanos.truncate(9);
    while nanos.len() < 9 {
        nanos.push('0');
    }
    secs.parse::<i64>().unwrap_or(0) * 1_000_000_000 + nanos.parse::<i64>().unwrap_or(0)
}

/// Regular files under `dir`, recursively, skipping Fluentd's buffer
/// chunks (`buffer.*`).
fn files_in(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let Ok(entries) = std::fs::read_dir(dir) else {
        return out;
    };
    for e in entries.flatten() {
        let p = e.path();
        if p.is_dir() {
            out.extend(files_in(&p));
        } else if !p
            .file_name()
            .is_some_and(|n| n.to_string_lossy().starts_with("buffer."))
        {
            out.push(p);
        }
    }
    out.sort();
    out
}

#[cfg(test)]
mod tests {
    #[test]
    fn times_keep_their_nanoseconds() {
        assert_eq!(
            super::seconds_dot_nanos("1796231916.302007284"),
            1_796_231_916_302_007_284
        );
        assert_eq!(super::seconds_dot_nanos("12.5"), 12_500_000_000);
    }
}
