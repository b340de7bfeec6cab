//! A private MariaDB server for one test.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;
use std::thread;
use std::time::{Duration, Instant};

/// A private MariaDB server for one test: its own data directory, socket
/// and loopback port in a temporary directory, the slow log on with
/// long_query_time=0. Stopped (and waited for) on drop, whatever happens.
pub struct MariaDb {
    pub dir: tempfile::TempDir,
    pub socket: PathBuf,
    pub port: u16,
    pub slow_log: PathBuf,
    child: Option<Child>,
}

impl MariaDb {
    pub fn start() -> MariaDb {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("data");
        // Two bootstraps at once collide on temporary tables in /tmp.
        static INSTALL: Mutex<()> = Mutex::new(());
        let _one_at_a_time = INSTALL.lock().unwrap_or_else(|e| e.into_inner());
        let out = Command::new("mariadb-install-db")
            .args([
                "--no-defaults",
                "--auth-root-authentication-method=normal",
                "--skip-test-db",
                "--user=root",
            ])
            .arg(format!("--datadir={}", data.display()))
            .output()
            .expect("mariadb-install-db (Debian's mariadb-server) runs");
        assert!(
            out.status.success(),
            "mariadb-install-db: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let mut db = MariaDb {
            socket: dir.path().join("mysql.sock"),
            slow_log: dir.path().join("slow.log"),
            port,
            dir,
            child: None,
        };
        db.boot();
        db
    }

    /// Starts mariadbd on the existing data directory and waits until it
    /// answers.
    pub fn boot(&mut self) {
        let d = self.dir.path();
        let child = Command::new("/usr/sbin/mariadbd")
            .arg("--no-defaults")
            .arg(format!("--datadir={}", d.join("data").display()))
            .arg(format!("--socket={}", self.socket.display()))
            .arg(format!("--port={}", self.port))
            .args([
                "--bind-address=127.0.0.1",
                "--user=root",
                "--skip-name-resolve",
            ])
            .arg(format!("--tmpdir={}", d.display()))
            .arg(format!("--pid-file={}", d.join("mariadbd.pid").display()))
            .arg(format!("--log-error={}", d.join("error.log").display()))
            .args([
                "--slow_query_log=1",
                "--long_query_time=0",
                "--log_slow_verbosity=query_plan,explain",
            ])
            .arg(format!("--slow_query_log_file={}", self.slow_log.display()))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("mariadbd starts");
        self.child = Some(child);
        let start = Instant::now();
        loop {
            let ok = Command::new("mariadb-admin")
                .args(["--no-defaults", "-uroot"])
                .arg(format!("--socket={}", self.socket.display()))
                .arg("ping")
                .output()
                .is_ok_and(|o| o.status.success());
            if ok {
                return;
            }
            assert!(
                start.elapsed() < Duration::from_secs(60),
                "mariadbd did not come up: {}",
                std::fs::read_to_string(d.join("error.log")).unwrap_or_default()
            );
            thread::sleep(Duration::from_millis(100));
        }
    }

    /// Runs SQL with the command-line client (comments kept, so statements
    /// can be marked); returns its tab-separated output.
    pub fn sql(&self, sql: &str) -> String {
        let out = Command::new("mariadb")
            .args(["--no-defaults", "-uroot", "-N", "-B", "--comments"])
            .arg(format!("--socket={}", self.socket.display()))
            .arg("-e")
            .arg(sql)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{sql}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Runs SQL that is expected to fail; returns the client's error text.
    pub fn sql_err(&self, sql: &str) -> String {
        let out = Command::new("mariadb")
            .args(["--no-defaults", "-uroot", "--comments"])
            .arg(format!("--socket={}", self.socket.display()))
            .arg("-e")
            .arg(sql)
            .output()
            .unwrap();
        assert!(!out.status.success(), "{sql} should fail");
        String::from_utf8_lossy(&out.stderr).into_owned()
    }

    /// SIGTERM, then wait for the server to exit.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            // SAFETY: kill(2) on our own child.
            unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
            let start = Instant::now();
            while child.try_wait().ok().flatten().is_none() {
                if start.elapsed() > Duration::from_secs(60) {
                    let _ = child.kill();
                }
                thread::sleep(Duration::from_millis(50));
            }
        }
    }
}

impl Drop for MariaDb {
    fn drop(&mut self) {
        self.stop();
    }
}
