//! The real `my-agent` binary as a child process, and what /proc says of it.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

/// The agent under test: this workspace's build, or `MY_AGENT_BIN` (an
/// agent installed from a package, e.g. by the xtask's fleet test, so the
/// same tests judge an el7 build).
///
/// Cargo builds the binary for the agent's integration tests next to the
/// directory that holds them (`target/<profile>/deps/<test>` ->
/// `target/<profile>/my-agent`), which is where `CARGO_BIN_EXE_my-agent`
/// points too.
pub fn agent_binary() -> PathBuf {
    if let Some(bin) = std::env::var_os("MY_AGENT_BIN") {
        return PathBuf::from(bin);
    }
    let exe = std::env::current_exe().expect("the test's own path");
    let bin = exe
        .parent()
        .and_then(Path::parent)
        .map(|dir| dir.join("my-agent"))
        .expect("a test in target/<profile>/deps");
    assert!(
        bin.exists(),
        "{} not built (set MY_AGENT_BIN)",
        bin.display()
    );
    bin
}

pub struct Agent {
    pub child: Child,
    pub log: PathBuf,
}

impl Agent {
    pub fn start(dir: &Path, config: &str) -> Agent {
        Agent::start_with_env(dir, config, &[])
    }

    /// `start` with extra environment variables.
    pub fn start_with_env(dir: &Path, config: &str, env: &[(&str, &Path)]) -> Agent {
        Agent::spawn(dir, config, |cmd| {
            cmd.envs(env.iter().copied());
        })
    }

    /// `start` with the agent's standard output written to `stdout`.
    pub fn start_with_stdout(dir: &Path, config: &str, stdout: &Path) -> Agent {
        let file = std::fs::File::create(stdout).expect("the stdout file is created");
        Agent::spawn(dir, config, |cmd| {
            cmd.stdout(file);
        })
    }

    /// `start` with RLIMIT_NOFILE set to `soft` and `hard` in the agent's
    /// process, as a service's `LimitNOFILE=` (or `prlimit`) would.
    pub fn start_with_nofile_limit(dir: &Path, config: &str, soft: u64, hard: u64) -> Agent {
        Agent::spawn(dir, config, |cmd| {
            use std::os::unix::process::CommandExt;
            let limit = libc::rlimit {
                rlim_cur: soft,
                rlim_max: hard,
            };
            // SAFETY: between fork and exec only setrlimit runs, which is
            // async-signal-safe and allocates nothing.
            unsafe {
                cmd.pre_exec(move || {
                    if libc::setrlimit(libc::RLIMIT_NOFILE, &limit) == 0 {
                        Ok(())
                    } else {
                        Err(std::io::Error::last_os_error())
                    }
                });
            }
        })
    }

    /// Writes `config` to `dir/agent.yml` and runs the agent on it, logging
    /// to `dir/agent.log`; `adjust` adds to the command.
    fn spawn(dir: &Path, config: &str, adjust: impl FnOnce(&mut Command)) -> Agent {
        Agent::spawn_binary(&agent_binary(), dir, config, adjust)
    }

    /// `start` with the agent at `binary` (the bench's release build).
    pub fn start_binary(binary: &Path, dir: &Path, config: &str) -> Agent {
        Agent::spawn_binary(binary, dir, config, |_| {})
    }

    /// `start_binary` run by another program: `wrapper` (a profiler and
    /// its options) is given the agent's binary and arguments.
    pub fn start_binary_under(
        wrapper: &[std::ffi::OsString],
        binary: &Path,
        dir: &Path,
        config: &str,
    ) -> Agent {
        let (program, options) = wrapper.split_first().expect("a wrapper program");
        let mut cmd = Command::new(program);
        cmd.args(options).arg(binary);
        Agent::spawn_command(cmd, dir, config, |_| {})
    }

    fn spawn_binary(
        binary: &Path,
        dir: &Path,
        config: &str,
        adjust: impl FnOnce(&mut Command),
    ) -> Agent {
        Agent::spawn_command(Command::new(binary), dir, config, adjust)
    }

    fn spawn_command(
        mut cmd: Command,
        dir: &Path,
        config: &str,
        adjust: impl FnOnce(&mut Command),
    ) -> Agent {
        let cfg = dir.join("agent.yml");
        std::fs::write(&cfg, config).unwrap();
        let log = dir.join("agent.log");
        cmd.arg("--config")
            .arg(&cfg)
            .arg("--log")
            .arg(&log)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit());
        adjust(&mut cmd);
        let child = cmd.spawn().expect("my-agent starts");
        Agent { child, log }
    }

    pub fn signal(&self, sig: i32) {
        // SAFETY: kill(2) on our own child's pid.
        unsafe {
            libc::kill(self.child.id() as i32, sig);
        }
    }

    pub fn kill9(mut self) {
        self.signal(libc::SIGKILL);
        let _ = self.child.wait();
    }

    /// SIGTERM and wait for a clean exit.
    pub fn stop(mut self) -> std::process::ExitStatus {
        self.signal(libc::SIGTERM);
        self.child.wait().unwrap()
    }

    pub fn peak_rss_kib(&self) -> u64 {
        status_field(self.child.id(), "VmHWM")
    }

    pub fn rss_kib(&self) -> u64 {
        status_field(self.child.id(), "VmRSS")
    }

    /// CPU seconds (user + system) used so far; read it while the agent
    /// runs: /proc forgets it at exit.
    pub fn cpu_seconds(&self) -> f64 {
        cpu_seconds(self.child.id())
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub fn status_field(pid: u32, field: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find(|l| l.starts_with(field))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

/// utime + stime of `pid` in seconds (0 once it is gone).
pub fn cpu_seconds(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // After the parenthesised command name, fields start at 3 (state):
    // utime is field 14, stime 15.
    let rest = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
    let f: Vec<&str> = rest.split_whitespace().collect();
    // SAFETY: sysconf has no preconditions.
    let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    let field = |i: usize| f.get(i - 3).and_then(|x| x.parse::<u64>().ok());
    match (field(14), field(15)) {
        (Some(u), Some(s)) => (u + s) as f64 / ticks,
        _ => 0.0,
    }
}
