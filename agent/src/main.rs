//! my-agent: tails MySQL logs and ships records over HTTP through a durable
//! buffer.

mod allocator;
mod buffer;
mod config;
mod convert;
mod event;
mod exporter;
mod filters;
#[allow(dead_code)] // used by the forward output and input (in progress)
mod forward;
mod http_server;
mod log;
mod metrics;
mod mysql;
mod outputs;
mod pipeline;
mod record;
mod replay;
mod rlimit;
mod signal_mask;
mod slowlog_cmd;
mod sources;
mod status;
mod status_cmd;
mod tag_pattern;
mod writable;
mod yaml;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use clap::{Parser, Subcommand};
use tokio::signal::unix::{signal, SignalKind};

use config::Config;
use http_server::HttpServer;
use metrics::Registry;
use pipeline::Pipeline;
use status::StatusBoard;

#[derive(Debug, Parser)]
#[command(
    name = "my-agent",
    version,
    about = "Monitoring agent for MySQL/MariaDB hosts",
    // `my-agent status` needs no configuration.
    subcommand_negates_reqs = true
)]
struct Flags {
    /// Configuration file (YAML)
    #[arg(short, long, value_name = "FILE", required = true)]
    config: Option<PathBuf>,
    /// Check the configuration and exit: 0 if valid, 1 with the error
    #[arg(long)]
    dry_run: bool,
    /// Run in the background (SysV init) and write the process id here
    #[arg(long, value_name = "PIDFILE")]
    daemon: Option<PathBuf>,
    /// Write the agent's own log here instead of stderr (reopened on SIGUSR1)
    #[arg(long, value_name = "FILE")]
    log: Option<PathBuf>,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Ask a running agent how it is doing (GET /status) and summarise:
    /// exit 0 when all is well, 1 when a source or output has a problem,
    /// 2 when the agent cannot be reached
    Status {
        /// The agent's metrics listener [default: system.metrics.bind of
        /// --config, else http://127.0.0.1:24231]
        #[arg(long, value_name = "URL")]
        url: Option<String>,
        /// Read the listener's address from this configuration file
        #[arg(short, long, value_name = "FILE")]
        config: Option<PathBuf>,
    },
    /// Convert a td-agent/Fluentd configuration into my-agent's YAML:
    /// exit 0 when all of it converted; 1 with each part that cannot be,
    /// as FILE:LINE; 3 with --partial when some parts were kept as comments
    Convert {
        #[arg(value_name = "FILE.conf")]
        input: PathBuf,
        /// Write the YAML here [default: standard output]
        #[arg(short, long, value_name = "FILE.yml")]
        output: Option<PathBuf>,
        /// Write what converts, with each part that does not as a comment
        #[arg(long)]
        partial: bool,
        /// Where the converted config keeps read positions and buffers
        /// (td-agent's own files have other formats and stay its own)
        #[arg(long, value_name = "DIR", default_value = "/var/lib/my-agent")]
        state_dir: String,
    },
    /// Read slow query logs as the mysql_slow_query source does and print
    /// entries, total query_time and rows examined/sent, per file and per
    /// database (compare with pt-query-digest before shipping)
    Slowlog {
        #[arg(value_name = "FILE", required = true)]
        files: Vec<PathBuf>,
        /// One JSON document, with the CPU seconds the parsing took
        #[arg(long)]
        json: bool,
    },
    /// Send the dead letters in DIR again through the output that wrote
    /// them (with --config), removing what is delivered: exit 0 when the
    /// directory is empty of them, 1 when some remain, 2 on a usage error.
    /// Run it as the service user.
    Replay {
        /// A dead-letter directory (`dead_letter_dir`, by default
        /// `<buffer path>/dead-letter`)
        #[arg(value_name = "DIR")]
        dir: PathBuf,
        /// The configuration naming the outputs [default: --config]
        #[arg(short, long, value_name = "FILE")]
        config: Option<PathBuf>,
        /// Send every file through this output instead of the one its
        /// `.meta.json` names
        #[arg(long, value_name = "ID")]
        output: Option<String>,
        /// How long to keep retrying an unreachable collector per file
        #[arg(long, value_name = "SECONDS", default_value_t = 30)]
        timeout: u64,
    },
}

fn main() {
    let mut flags = Flags::parse();
    match flags.command.take() {
        Some(Command::Status { url, config }) => {
            let config = config.or(flags.config);
            std::process::exit(status_cmd::run(url.as_deref(), config.as_deref()));
        }
        Some(Command::Replay {
            dir,
            config,
            output,
            timeout,
        }) => {
            let Some(config) = config.or(flags.config) else {
                eprintln!("error: replay needs the configuration: --config FILE");
                std::process::exit(2);
            };
            std::process::exit(replay::run(
                &config,
                &dir,
                output.as_deref(),
                std::time::Duration::from_secs(timeout),
            ));
        }
        Some(Command::Convert {
            input,
            output,
            partial,
            state_dir,
        }) => {
            std::process::exit(convert::run(&input, output.as_deref(), partial, &state_dir));
        }
        Some(Command::Slowlog { files, json }) => {
            std::process::exit(slowlog_cmd::run(&files, json));
        }
        None => {}
    }
    // Until run() has installed the handlers (see signal_mask).
    signal_mask::hold();
    let config_path = flags
        .config
        .take()
        .expect("clap requires --config without a subcommand");
    let (config, text) = match Config::load_with_text(&config_path) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("error: {e}");
            std::process::exit(1);
        }
    };
    if flags.dry_run {
        println!("{}: configuration is valid", config_path.display());
        return;
    }
    if let Some(log) = &flags.log {
        if let Err(e) = log::to_file(log.clone()) {
            eprintln!("error: cannot open log file {}: {e}", log.display());
            std::process::exit(1);
        }
    }
    if let Some(pidfile) = &flags.daemon {
        // Before any thread exists: fork is only safe in a single-threaded process.
        if let Err(e) = daemonize(pidfile) {
            eprintln!("error: cannot daemonize: {e}");
            std::process::exit(1);
        }
    }
    log::abort_on_panic();
    rlimit::raise_nofile_limit(&config);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    let code = rt.block_on(run(flags, config_path, config, text));
    std::process::exit(code);
}

async fn run(flags: Flags, config_path: PathBuf, config: Config, mut running: String) -> i32 {
    // Before anything that takes time: a signal that arrives while the
    // pipeline starts (a SIGHUP from logrotate, a SIGTERM from systemd) is
    // handled once it has started, not by the default action, which for
    // SIGHUP is to die. Held pending since main (signal_mask) until now.
    let mut term = signal(SignalKind::terminate()).expect("SIGTERM handler");
    let mut int = signal(SignalKind::interrupt()).expect("SIGINT handler");
    let mut hup = signal(SignalKind::hangup()).expect("SIGHUP handler");
    let mut usr1 = signal(SignalKind::user_defined1()).expect("SIGUSR1 handler");
    signal_mask::release();
    let registry = Arc::new(Registry::default());
    // Outlives reloads like the registry: each pipeline publishes its
    // entries here, and the listener (restarted or not) reads them.
    let board = Arc::new(StatusBoard::default());
    let mut serving = Listeners::of(&config);
    let mut listeners = match serving.start(&registry, &board).await {
        Ok(l) => l,
        Err(e) => {
            log::error(&e);
            return 1;
        }
    };
    let handle = tokio::runtime::Handle::current();
    let mut pipeline = match Pipeline::start(config, &registry, &board, &handle).await {
        Ok(p) => p,
        Err(e) => {
            log::error(&format!("cannot start: {e:#}"));
            return 1;
        }
    };
    log::info(&format!(
        "my-agent {} started with {}",
        env!("CARGO_PKG_VERSION"),
        config_path.display()
    ));
    // A reload's configuration is read and prepared on a blocking thread,
    // not here: this task serves signals, and the runtime's one thread
    // serves /metrics and the flushers.
    let mut preparing: Option<Preparing> = None;
    let mut again = false;
    loop {
        tokio::select! {
            _ = term.recv() => break,
            _ = int.recv() => break,
            _ = usr1.recv() => {
                log::reopen();
                pipeline.flush();
                log::info("SIGUSR1: flushing buffers, log reopened");
            }
            _ = hup.recv() => {
                if preparing.is_some() {
                    again = true;
                    log::info("SIGHUP: a reload is being prepared; reloading again once it is done");
                } else {
                    preparing = Some(Preparing::start(&config_path, &running));
                }
            }
            ready = async { preparing.as_mut().expect("guarded").wait().await }, if preparing.is_some() => {
                preparing = None;
                if let Some(ready) = ready {
                    let shared = Shared { registry: &registry, board: &board, handle: &handle };
                    match reload(ready, &mut running, pipeline, &mut listeners, &mut serving, &shared).await {
                        Ok(p) => pipeline = p,
                        Err(e) => {
                            log::error(&format!("SIGHUP: {e}"));
                            return 1;
                        }
                    }
                }
                if std::mem::take(&mut again) {
                    preparing = Some(Preparing::start(&config_path, &running));
                }
            }
        }
    }
    log::info("shutting down: draining buffers");
    for server in listeners {
        server.stop().await;
    }
    pipeline.stop().await;
    if let Some(pidfile) = &flags.daemon {
        let _ = std::fs::remove_file(pidfile);
    }
    log::info("stopped");
    0
}

/// What outlives every pipeline: metrics, the status board, the runtime.
struct Shared<'a> {
    registry: &'a Arc<Registry>,
    board: &'a Arc<StatusBoard>,
    handle: &'a tokio::runtime::Handle,
}

/// How long reading and preparing a new configuration may take before the
/// reload is abandoned. Named files are opened without blocking, so only
/// a stuck file system gets near it.
const PREPARE_DEADLINE: std::time::Duration = std::time::Duration::from_secs(30);

/// A new configuration being read and prepared on a blocking thread (clients
/// built, directories proven writable) while the old pipeline keeps
/// running. The running configuration is prepared again there too (from
/// the text it was loaded from), so that if the new one still fails to
/// start (its buffer cannot be opened) the old one comes back without
/// another fallible step.
struct Preparing {
    task: tokio::task::JoinHandle<Option<Ready>>,
    deadline: tokio::time::Instant,
}

/// A reload ready to apply.
struct Ready {
    text: String,
    wanted: Listeners,
    prepared: pipeline::Prepared,
    fallback: anyhow::Result<(Listeners, pipeline::Prepared)>,
}

impl Preparing {
    fn start(config_path: &Path, running: &str) -> Preparing {
        let (path, running) = (config_path.to_path_buf(), running.to_string());
        Preparing {
            task: tokio::task::spawn_blocking(move || prepare_reload(&path, &running)),
            deadline: tokio::time::Instant::now() + PREPARE_DEADLINE,
        }
    }

    /// The prepared reload; None when it was refused or took too long
    /// (logged: the old configuration keeps running).
    async fn wait(&mut self) -> Option<Ready> {
        match tokio::time::timeout_at(self.deadline, &mut self.task).await {
            Ok(Ok(ready)) => ready,
            Ok(Err(e)) => {
                log::error(&format!(
                    "SIGHUP: preparing the new configuration failed ({e}); the old one keeps running"
                ));
                None
            }
            Err(_) => {
                log::error(&format!(
                    "SIGHUP: reading and preparing the new configuration took longer than {}s (a file that does not answer?); abandoned, the old one keeps running",
                    PREPARE_DEADLINE.as_secs()
                ));
                None
            }
        }
    }
}

/// Runs on a blocking thread: everything of a reload that reads files.
fn prepare_reload(config_path: &Path, running: &str) -> Option<Ready> {
    let (new, text) = match Config::load_with_text(config_path) {
        Ok(c) => c,
        Err(e) => {
            log::error(&format!(
                "SIGHUP: new configuration rejected, the old one keeps running: {e}"
            ));
            return None;
        }
    };
    let wanted = Listeners::of(&new);
    let prepared = match Pipeline::prepare(new) {
        Ok(p) => p,
        Err(e) => {
            log::error(&format!(
                "SIGHUP: new configuration cannot start, the old one keeps running: {e:#}"
            ));
            return None;
        }
    };
    let fallback = Config::parse(running)
        .map_err(|e| anyhow::anyhow!("{}:{e}", config_path.display()))
        .and_then(|old| Ok((Listeners::of(&old), Pipeline::prepare(old)?)));
    if let Err(e) = &fallback {
        log::warn(&format!(
            "SIGHUP: the running configuration could not be prepared again ({e:#}); there is no way back if the new one fails to start"
        ));
    }
    Some(Ready {
        text,
        wanted,
        prepared,
        fallback,
    })
}

/// SIGHUP, once the new configuration is prepared: the old pipeline is
/// stopped and the new one started; if it cannot start, the old one
/// starts again. Err only when neither can run.
async fn reload(
    ready: Ready,
    running: &mut String,
    pipeline: Pipeline,
    listeners: &mut Vec<HttpServer>,
    serving: &mut Listeners,
    shared: &Shared<'_>,
) -> Result<Pipeline, String> {
    let Shared {
        registry,
        board,
        handle,
    } = *shared;
    let Ready {
        text,
        wanted,
        prepared,
        fallback,
    } = ready;
    log::info("SIGHUP: reloading the configuration");
    pipeline.stop().await;
    for server in listeners.drain(..) {
        server.stop().await;
    }
    match prepared.start(registry, board, handle).await {
        Ok(p) => {
            *running = text;
            *listeners = restart_listeners(wanted, serving, registry, board).await;
            Ok(p)
        }
        Err(e) => {
            log::error(&format!(
                "SIGHUP: cannot start the new configuration: {e:#}; starting the previous one again"
            ));
            let (old_listeners, old) = fallback.map_err(|e| format!("{e:#}"))?;
            let p = old
                .start(registry, board, handle)
                .await
                .map_err(|e| format!("cannot start the previous configuration either: {e:#}"))?;
            *listeners = restart_listeners(old_listeners, serving, registry, board).await;
            Ok(p)
        }
    }
}

/// Serves what `wanted` asks for, else what was served before; without
/// either the agent keeps shipping and says so (the listeners are how it
/// is watched, not what it is for).
async fn restart_listeners(
    wanted: Listeners,
    serving: &mut Listeners,
    registry: &Arc<Registry>,
    board: &Arc<StatusBoard>,
) -> Vec<HttpServer> {
    match wanted.start(registry, board).await {
        Ok(l) => {
            *serving = wanted;
            l
        }
        Err(e) => {
            log::error(&format!("SIGHUP: {e}; serving the previous listeners"));
            serving.start(registry, board).await.unwrap_or_else(|e| {
                log::error(&format!(
                    "SIGHUP: {e}; /metrics and /status are not served until the next reload"
                ));
                Vec::new()
            })
        }
    }
}

/// What the agent serves over HTTP besides shipping: `/metrics` (with
/// `/status` and `/health`) and the query exporter, as a configuration asks
/// for them.
struct Listeners {
    metrics: Option<std::net::SocketAddr>,
    exporter: Option<exporter::ExporterConfig>,
}

impl Listeners {
    fn of(config: &Config) -> Listeners {
        Listeners {
            metrics: config.system.metrics_bind,
            exporter: config.exporter.clone(),
        }
    }

    /// Binds every listener, or none: on an error the ones already started
    /// are stopped again.
    async fn start(
        &self,
        registry: &Arc<Registry>,
        board: &Arc<StatusBoard>,
    ) -> Result<Vec<HttpServer>, String> {
        let mut started = Vec::new();
        let mut wanted = Vec::new();
        if let Some(bind) = self.metrics {
            let registry = registry.clone();
            let app = http_server::metrics_router(move || {
                let page = registry.render();
                async move { page }
            })
            .merge(http_server::status_router(board.clone()));
            wanted.push(("metrics", bind, app));
        }
        if let Some(cfg) = &self.exporter {
            let app = Arc::new(exporter::Exporter::new(cfg.clone())).router();
            wanted.push(("the query exporter", cfg.bind, app));
        }
        for (what, bind, app) in wanted {
            match HttpServer::start(bind, app).await {
                Ok(server) => {
                    log::info(&format!("serving {what} on http://{bind}/metrics"));
                    started.push(server);
                }
                Err(e) => {
                    for server in started {
                        server.stop().await;
                    }
                    return Err(format!("cannot serve {what} on {bind}: {e}"));
                }
            }
        }
        Ok(started)
    }
}

fn daemonize(pidfile: &Path) -> std::io::Result<()> {
    // SAFETY: called before any other thread is started.
    unsafe {
        match libc::fork() {
            -1 => return Err(std::io::Error::last_os_error()),
            0 => {}
            _ => libc::_exit(0),
        }
        if libc::setsid() == -1 {
            return Err(std::io::Error::last_os_error());
        }
        match libc::fork() {
            -1 => return Err(std::io::Error::last_os_error()),
            0 => {}
            _ => libc::_exit(0),
        }
        let devnull = libc::open(c"/dev/null".as_ptr(), libc::O_RDWR);
        if devnull >= 0 {
            libc::dup2(devnull, 0);
            libc::dup2(devnull, 1);
            libc::dup2(devnull, 2);
        }
    }
    writable::write_atomic(pidfile, format!("{}\n", std::process::id()).as_bytes())
}
