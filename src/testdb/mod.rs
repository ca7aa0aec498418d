//! A throwaway PostgreSQL for tests and examples (feature `testdb`, Unix only).
//!
//! The module exists on Unix only (the private server listens on a unix socket, and
//! as root it is started under the `postgres` user's uid/gid); enabling `testdb` on
//! another platform is a compile error.
//!
//! [`TestDb::start`] uses `DATABASE_URL` when it is set; otherwise it starts a private
//! cluster from the local PostgreSQL binaries (`initdb` + `postgres`, found through
//! `pg_config --bindir`, `/usr/lib/postgresql/*/bin` or `PATH`) in a fresh temporary
//! directory. The private server listens only on a unix socket inside that directory
//! (nothing on the network), runs with `fsync=off`, and accepts every local connection
//! as the superuser `postgres` (trust authentication).
//!
//! When the process runs as root, the cluster runs as the `postgres` system user
//! (`initdb` refuses to run as root).
//!
//! # PgBouncer
//!
//! [`TestDb::pgbouncer`] starts a PgBouncer in transaction pooling mode in front of
//! the server on first use, and [`TestDb::pooled_schema`] gives a test its own schema
//! through it (see [`PgBouncer`]). It needs the `pgbouncer` binary
//! (`apt-get install -y pgbouncer`); with `DATABASE_URL` it forwards to that server.
//!
//! # Cleanup
//!
//! Next to the server, a tiny watchdog shell process waits for end-of-file on a pipe
//! whose only write end is held by the [`TestDb`]. When the `TestDb` is dropped, or the
//! test process exits in any way (normal exit, panic, `SIGKILL`), the pipe closes and
//! the watchdog stops the server (immediate shutdown) and removes the directory. This
//! is what cleans up [`TestDb::shared`], which lives in a `static` and is never dropped.
//!
//! # Isolation
//!
//! Tests in one binary run in parallel threads: give each test its own schema with
//! [`TestDb::schema`]; the schema is dropped (`CASCADE`) when the [`TestSchema`] is
//! dropped.
//!
//! ```no_run
//! # async fn demo() -> pgpatterns::Result<()> {
//! use pgpatterns::testdb::TestDb;
//!
//! let db = TestDb::shared()?;
//! let schema = db.schema().await?;
//! let client = schema.connect().await?;
//! client
//!     .batch_execute("CREATE TABLE t (id int); INSERT INTO t VALUES (1)")
//!     .await
//!     .expect("create table");
//! # Ok(())
//! # }
//! ```

use std::ffi::OsStr;
use std::fmt;
use std::fs;
use std::io::{self, BufRead, Write};
use std::os::unix::fs::{DirBuilderExt, MetadataExt};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use crate::error::{Error, Result};

/// The port number of the private server. It only names the socket file
/// (`<dir>/.s.PGSQL.<port>`): the server does not listen on the network.
const PORT: u16 = 5432;
/// How long to wait for a freshly started server to report "ready".
const READY_TIMEOUT: Duration = Duration::from_secs(30);
/// How long `Drop` waits for the server / the watchdog before forcing it.
const STOP_TIMEOUT: Duration = Duration::from_secs(15);
/// Longest accepted temp dir path, so that `<dir>/.s.PGSQL.<port>` stays well below
/// the unix socket path limit (107 bytes).
const MAX_DIR_LEN: usize = 80;
/// How to get a database when none can be started.
const HOW_TO_FIX: &str =
    "install PostgreSQL (e.g. `apt-get install -y postgresql`) or set DATABASE_URL";

/// The watchdog script, run as `sh -c WATCHDOG sh <dir>` with a pipe on stdin.
///
/// `TestDb` writes the postmaster's pid as one line to the pipe right after spawning
/// it and keeps the write end open. The script waits for EOF (the `TestDb` was dropped
/// or the process exited in any way), then sends SIGQUIT (immediate shutdown) to the
/// postmaster, waits until it is gone (a zombie counts as gone: an orphan may never be
/// reaped if PID 1 does not reap), escalates to SIGKILL after ~10 s, and removes the
/// directory. If the process died before it could send the pid, the pid is taken from
/// `postmaster.pid`. The directory is a positional parameter and the pid is validated
/// as digits: nothing is interpolated into the script.
const WATCHDOG: &str = r#"trap '' INT HUP
pid=
read -r pid || :
cat >/dev/null 2>&1
if [ -z "$pid" ] && [ -d "$1/data" ]; then
  sleep 0.5 2>/dev/null || sleep 1
  pid=$(head -n 1 "$1/data/postmaster.pid" 2>/dev/null)
fi
case "$pid" in '' | *[!0-9]*) pid= ;; esac
if [ -n "$pid" ] && kill -QUIT "$pid" 2>/dev/null; then
  i=0
  while kill -0 "$pid" 2>/dev/null; do
    case "$(cat "/proc/$pid/stat" 2>/dev/null)" in *") Z "*) break ;; esac
    i=$((i + 1))
    if [ "$i" -eq 200 ]; then kill -KILL "$pid" 2>/dev/null; fi
    if [ "$i" -ge 300 ]; then break; fi
    sleep 0.05 2>/dev/null || sleep 1
  done
fi
rm -rf "$1"
"#;

/// Environment variables that could redirect `initdb`/`postgres`; removed for them.
const PG_ENV: &[&str] = &[
    "PGDATA",
    "PGHOST",
    "PGHOSTADDR",
    "PGPORT",
    "PGUSER",
    "PGDATABASE",
    "PGOPTIONS",
    "PGPASSWORD",
];

static COUNTER: AtomicU64 = AtomicU64::new(0);

fn err(command: impl Into<String>, stderr: impl Into<String>) -> Error {
    Error::TestDb {
        command: command.into(),
        stderr: stderr.into(),
    }
}

fn nanos_now() -> u128 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0)
}

/// A PostgreSQL database for tests: either `DATABASE_URL`, or a private throwaway
/// cluster that is stopped and deleted when this value is dropped (or, at the latest,
/// when the process exits).
pub struct TestDb {
    connection_string: String,
    config: tokio_postgres::Config,
    startup_time: Duration,
    cluster: Option<Cluster>,
    /// Started on first use by [`TestDb::pgbouncer`].
    pgbouncer: OnceLock<std::result::Result<PgBouncer, (String, String)>>,
    standby: LazyStandby,
}

impl fmt::Debug for TestDb {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut d = f.debug_struct("TestDb");
        match &self.cluster {
            // The DATABASE_URL may contain a password: do not print it.
            None => d.field("connection_string", &"<DATABASE_URL>"),
            Some(_) => d.field("connection_string", &self.connection_string),
        };
        d.field("throwaway", &self.is_throwaway())
            .field("data_dir", &self.data_dir())
            .field("server_pid", &self.server_pid())
            .field("startup_time", &self.startup_time)
            .finish()
    }
}

impl TestDb {
    /// Uses `DATABASE_URL` if it is set (and not empty), else starts a private
    /// cluster with [`TestDb::start_cluster`].
    ///
    /// # Errors
    /// [`Error::TestDb`] when `DATABASE_URL` is not valid UTF-8 or not a
    /// connection string, or as [`TestDb::start_cluster`].
    pub fn start() -> Result<TestDb> {
        match std::env::var_os("DATABASE_URL") {
            Some(url) if !url.is_empty() => match url.to_str() {
                Some(url) => Self::from_url(url),
                None => Err(err("read DATABASE_URL", "DATABASE_URL is not valid UTF-8")),
            },
            _ => Self::start_cluster(),
        }
    }

    /// Always starts a private cluster in a fresh temp dir, ignoring `DATABASE_URL`.
    ///
    /// Blocks until the server accepts connections (typically 1–2 s, mostly `initdb`).
    ///
    /// # Errors
    /// [`Error::TestDb`] naming the step that failed, with its output: no
    /// PostgreSQL binaries found, the temp dir or the `postgres` user
    /// unavailable, `initdb` or the server failing, or the server not ready
    /// in time.
    pub fn start_cluster() -> Result<TestDb> {
        let started = Instant::now();
        let bindir = find_bindir()?;
        let dir = make_temp_dir()?;
        let run_as = match run_as_user(&dir) {
            Ok(run_as) => run_as,
            Err(e) => {
                let _ = fs::remove_dir_all(&dir);
                return Err(e);
            }
        };
        // From here on, dropping `cluster` (e.g. on an error return) cleans up, and so
        // does the watchdog if this process dies.
        let mut cluster = spawn_watchdog(dir)?;
        let dir = cluster.dir.clone();
        let data_dir = cluster.data_dir.clone();
        let env = ChildEnv { dir: &dir, run_as };

        run_initdb(&bindir, &data_dir, &env)?;

        let log_path = dir.join("server.log");
        let log = fs::File::create(&log_path)
            .map_err(|e| err(format!("create {}", log_path.display()), e.to_string()))?;
        if let Some(user) = run_as {
            chown(&log_path, user)?;
        }
        let log2 = log
            .try_clone()
            .map_err(|e| err("duplicate server log handle", e.to_string()))?;

        let postgres = bindir.join("postgres");
        let port = PORT.to_string();
        let args: Vec<&OsStr> = vec![
            "-D".as_ref(),
            data_dir.as_os_str(),
            "-k".as_ref(),
            dir.as_os_str(),
            "-c".as_ref(),
            "listen_addresses=".as_ref(),
            "-p".as_ref(),
            port.as_ref(),
            "-F".as_ref(),
            "-c".as_ref(),
            "fsync=off".as_ref(),
            "-c".as_ref(),
            "synchronous_commit=off".as_ref(),
            "-c".as_ref(),
            "full_page_writes=off".as_ref(),
            "-c".as_ref(),
            "max_connections=200".as_ref(),
            "-c".as_ref(),
            "shared_buffers=128MB".as_ref(),
        ];
        let command_line = display_command(&postgres, &args);
        let postmaster = env
            .command(&postgres)
            .args(&args)
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(log2)
            // Not in the terminal's foreground process group: Ctrl-C stops the tests,
            // and the watchdog then shuts the server down.
            .process_group(0)
            .spawn()
            .map_err(|e| err(command_line.clone(), format!("{e}{}", env.hint())))?;
        let pid = postmaster.id();
        let postmaster = cluster.postmaster.insert(postmaster);
        if let Some(stdin) = &mut cluster.watchdog_stdin {
            stdin
                .write_all(format!("{pid}\n").as_bytes())
                .map_err(|e| err("send the server pid to the cleanup watchdog", e.to_string()))?;
        }

        wait_ready(postmaster, &data_dir, &log_path, &command_line)?;

        let mut config = tokio_postgres::Config::new();
        config
            .host_path(&dir)
            .port(PORT)
            .user("postgres")
            .dbname("postgres");
        let connection_string = format!(
            "host={} port={PORT} user=postgres dbname=postgres",
            quote_value(&dir.to_string_lossy())
        );
        Ok(TestDb {
            connection_string,
            config,
            startup_time: started.elapsed(),
            cluster: Some(cluster),
            pgbouncer: OnceLock::new(),
            standby: LazyStandby::default(),
        })
    }

    /// Uses an existing server given as a libpq connection string or URL.
    fn from_url(url: &str) -> Result<TestDb> {
        let config = url
            .parse::<tokio_postgres::Config>()
            .map_err(|e| err("parse DATABASE_URL", e.to_string()))?;
        Ok(TestDb {
            connection_string: url.to_owned(),
            config,
            startup_time: Duration::ZERO,
            cluster: None,
            pgbouncer: OnceLock::new(),
            standby: LazyStandby::default(),
        })
    }

    /// One database per process, created on first use with [`TestDb::start`] semantics.
    ///
    /// Statics are never dropped: the private cluster is stopped and removed by its
    /// watchdog when the process exits. If start-up failed, every call returns the
    /// same error again.
    ///
    /// # Errors
    /// [`Error::TestDb`]: as [`TestDb::start`], on every call once start-up
    /// failed.
    pub fn shared() -> Result<&'static TestDb> {
        static SHARED: OnceLock<std::result::Result<TestDb, (String, String)>> = OnceLock::new();
        let shared = SHARED.get_or_init(|| {
            TestDb::start().map_err(|e| match e {
                Error::TestDb { command, stderr } => (command, stderr),
                other => ("start".to_owned(), other.to_string()),
            })
        });
        match shared {
            Ok(db) => Ok(db),
            Err((command, stderr)) => Err(err(command.clone(), stderr.clone())),
        }
    }

    /// The libpq key=value connection string
    /// (`host=<socket dir> port=<port> user=postgres dbname=postgres`),
    /// or `DATABASE_URL` as given.
    #[must_use]
    pub fn connection_string(&self) -> &str {
        &self.connection_string
    }

    /// The parsed configuration for `tokio-postgres` (a synchronous
    /// `postgres::Config` can be made from it with `From`).
    #[must_use]
    pub fn config(&self) -> tokio_postgres::Config {
        self.config.clone()
    }

    /// `true` for a private cluster, `false` for `DATABASE_URL`.
    #[must_use]
    pub fn is_throwaway(&self) -> bool {
        self.cluster.is_some()
    }

    /// The data directory of the private cluster (`None` for `DATABASE_URL`).
    #[must_use]
    pub fn data_dir(&self) -> Option<&Path> {
        self.cluster.as_ref().map(|c| c.data_dir.as_path())
    }

    /// The pid of the private cluster's postmaster (`None` for `DATABASE_URL`).
    #[must_use]
    pub fn server_pid(&self) -> Option<u32> {
        self.cluster
            .as_ref()
            .and_then(|c| c.postmaster.as_ref())
            .map(Child::id)
    }

    /// How long start-up took (`initdb` until the server was ready);
    /// zero for `DATABASE_URL`.
    #[must_use]
    pub fn startup_time(&self) -> Duration {
        self.startup_time
    }

    /// Connects with `tokio-postgres` (no TLS) and spawns the connection task on the
    /// current tokio runtime.
    ///
    /// # Errors
    /// [`Error::TestDb`] outside a tokio runtime, or when the connection
    /// fails.
    pub async fn connect(&self) -> Result<tokio_postgres::Client> {
        connect_with(&self.config).await
    }

    /// Creates a fresh, uniquely named schema and returns a handle to it; connections
    /// made through the handle have `search_path` set to the schema. The schema is
    /// dropped (`CASCADE`) when the handle is dropped.
    ///
    /// # Errors
    /// [`Error::TestDb`] as [`TestDb::connect`], or when `CREATE SCHEMA`
    /// fails.
    pub async fn schema(&self) -> Result<TestSchema> {
        let name = unique_schema_name();
        let client = self.connect().await?;
        let sql = format!("CREATE SCHEMA {name}");
        client
            .batch_execute(&sql)
            .await
            .map_err(|e| err(sql, pg_error_text(&e)))?;
        Ok(TestSchema {
            config: schema_config(&self.config, &name),
            base: self.config.clone(),
            name,
        })
    }
}

impl Drop for TestDb {
    /// Stops the private server (immediate shutdown) and its standby, if one was
    /// made, and removes their directories; returns when all is done.
    fn drop(&mut self) {
        // The pooler first, then the standby while its primary still runs,
        // then the server. `Cluster::drop` closes the watchdog's pipe and
        // waits for the server and the watchdog to finish.
        drop(self.pgbouncer.take());
        self.standby.shut_down();
        drop(self.cluster.take());
    }
}

/// A uniquely named schema in a [`TestDb`], dropped (`CASCADE`) on drop.
#[derive(Debug)]
pub struct TestSchema {
    name: String,
    /// With `search_path` set to the schema.
    config: tokio_postgres::Config,
    /// The database's own configuration, used to drop the schema.
    base: tokio_postgres::Config,
}

impl TestSchema {
    /// The schema name (lowercase ASCII letters, digits and underscores only, so it
    /// needs no quoting).
    #[must_use]
    pub fn name(&self) -> &str {
        &self.name
    }

    /// A configuration whose connections use `search_path = <schema>`.
    #[must_use]
    pub fn config(&self) -> tokio_postgres::Config {
        self.config.clone()
    }

    /// A configuration whose connections use `search_path = <schema>` and go
    /// straight to the server, also for a schema made by
    /// [`TestDb::pooled_schema`] (whose [`config`](Self::config) goes through
    /// the pooler).
    #[must_use]
    pub fn direct_config(&self) -> tokio_postgres::Config {
        schema_config(&self.base, &self.name)
    }

    /// Connects with `search_path` set to the schema (no TLS), spawning the
    /// connection task on the current tokio runtime.
    ///
    /// # Errors
    /// As [`TestDb::connect`].
    pub async fn connect(&self) -> Result<tokio_postgres::Client> {
        connect_with(&self.config).await
    }
}

impl Drop for TestSchema {
    /// Runs `DROP SCHEMA <name> CASCADE` on a separate thread with its own runtime
    /// (so it also works inside a tokio runtime) and waits for it. Errors are printed
    /// to stderr, not raised. Finish open transactions on the schema's tables first:
    /// the drop waits for their locks (at most 10 s, `lock_timeout`).
    fn drop(&mut self) {
        let base = self.base.clone();
        let name = self.name.clone();
        let spawned = std::thread::Builder::new()
            .name("pgpatterns-drop-schema".into())
            .spawn(move || drop_schema(base, &name));
        let outcome = match spawned {
            Ok(handle) => match handle.join() {
                Ok(result) => result,
                Err(_) => Err(err("drop schema", "the dropping thread panicked")),
            },
            Err(e) => Err(err("spawn thread to drop schema", e.to_string())),
        };
        if let Err(e) = outcome {
            eprintln!("pgpatterns testdb: schema {}: {e}", self.name);
        }
    }
}

fn drop_schema(mut config: tokio_postgres::Config, name: &str) -> Result<()> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| err("build tokio runtime", e.to_string()))?;
    config.connect_timeout(Duration::from_secs(10));
    let sql = format!("SET lock_timeout = '10s'; DROP SCHEMA IF EXISTS {name} CASCADE");
    runtime.block_on(async {
        let work = async {
            let (client, connection) = config
                .connect(tokio_postgres::NoTls)
                .await
                .map_err(|e| err("connect", pg_error_text(&e)))?;
            let task = tokio::spawn(connection);
            let result = client
                .batch_execute(&sql)
                .await
                .map_err(|e| err(sql.clone(), pg_error_text(&e)));
            drop(client);
            let _ = task.await;
            result
        };
        match tokio::time::timeout(Duration::from_secs(30), work).await {
            Ok(result) => result,
            Err(_) => Err(err(sql.clone(), "timed out after 30 s")),
        }
    })
}

async fn connect_with(config: &tokio_postgres::Config) -> Result<tokio_postgres::Client> {
    let handle = tokio::runtime::Handle::try_current()
        .map_err(|e| err("connect (spawn connection task)", e.to_string()))?;
    let (client, connection) = config
        .connect(tokio_postgres::NoTls)
        .await
        .map_err(|e| err("connect", pg_error_text(&e)))?;
    handle.spawn(async move {
        if let Err(e) = connection.await {
            eprintln!("pgpatterns testdb: connection error: {}", pg_error_text(&e));
        }
    });
    Ok(client)
}

/// The message of a tokio-postgres error, including the server's message or the
/// underlying I/O error (its `Display` alone says only "db error").
fn pg_error_text(e: &tokio_postgres::Error) -> String {
    if let Some(db) = e.as_db_error() {
        return format!(
            "{}: {} (SQLSTATE {})",
            db.severity(),
            db.message(),
            db.code().code()
        );
    }
    let mut text = e.to_string();
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}

fn unique_schema_name() -> String {
    format!(
        "pgp_t_{}_{}_{}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed),
        nanos_now() % 1_000_000_000_000
    )
}

fn schema_config(base: &tokio_postgres::Config, name: &str) -> tokio_postgres::Config {
    let mut config = base.clone();
    let options = match base.get_options() {
        Some(o) if !o.trim().is_empty() => format!("{o} -c search_path={name}"),
        _ => format!("-c search_path={name}"),
    };
    config.options(options);
    config
}

/// Quotes a value for a libpq key=value connection string when needed.
fn quote_value(value: &str) -> String {
    let plain = !value.is_empty()
        && !value
            .chars()
            .any(|c| c.is_whitespace() || c == '\'' || c == '\\');
    if plain {
        return value.to_owned();
    }
    let mut quoted = String::with_capacity(value.len() + 2);
    quoted.push('\'');
    for c in value.chars() {
        if c == '\'' || c == '\\' {
            quoted.push('\\');
        }
        quoted.push(c);
    }
    quoted.push('\'');
    quoted
}

fn display_command(program: &Path, args: &[&OsStr]) -> String {
    let mut line = program.display().to_string();
    for a in args {
        line.push(' ');
        line.push_str(&a.to_string_lossy());
    }
    line
}

mod cluster;
use cluster::*;
mod pgbouncer;
pub use pgbouncer::PgBouncer;
mod standby;
use standby::LazyStandby;
pub use standby::{Standby, STANDBY_URL_ENV};

#[cfg(test)]
mod tests;
