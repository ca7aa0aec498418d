//! A throwaway PostgreSQL for tests and examples (feature `testdb`).
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
}

/// The private cluster's processes and directory; dropping it stops the server and
/// removes the directory (also on the failure paths of start-up).
#[derive(Debug)]
struct Cluster {
    /// The temp dir: socket, `server.log` and `data/`.
    dir: PathBuf,
    data_dir: PathBuf,
    /// `None` until the server has been spawned.
    postmaster: Option<Child>,
    watchdog: Child,
    /// The only write end of the watchdog's stdin: closing it triggers the cleanup.
    watchdog_stdin: Option<ChildStdin>,
}

impl Drop for Cluster {
    fn drop(&mut self) {
        // EOF for the watchdog: it sends SIGQUIT to the server and removes the dir.
        drop(self.watchdog_stdin.take());
        if let Some(postmaster) = &mut self.postmaster {
            // Reap the server, so that the watchdog does not wait for a zombie.
            if !wait_exit(postmaster, STOP_TIMEOUT) {
                eprintln!(
                    "pgpatterns testdb: server {} did not stop in {STOP_TIMEOUT:?}; killing it",
                    postmaster.id()
                );
                stop_postmaster(postmaster);
            }
        }
        if !wait_exit(&mut self.watchdog, STOP_TIMEOUT) {
            eprintln!("pgpatterns testdb: cleanup watchdog did not finish; killing it");
            let _ = self.watchdog.kill();
            let _ = self.watchdog.wait();
        }
        if fs::symlink_metadata(&self.dir).is_ok() {
            if let Err(e) = fs::remove_dir_all(&self.dir) {
                eprintln!(
                    "pgpatterns testdb: cannot remove {}: {e}",
                    self.dir.display()
                );
            }
        }
    }
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
        })
    }

    /// One database per process, created on first use with [`TestDb::start`] semantics.
    ///
    /// Statics are never dropped: the private cluster is stopped and removed by its
    /// watchdog when the process exits. If start-up failed, every call returns the
    /// same error again.
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
    pub fn connection_string(&self) -> &str {
        &self.connection_string
    }

    /// The parsed configuration for `tokio-postgres` (a synchronous
    /// `postgres::Config` can be made from it with `From`).
    pub fn config(&self) -> tokio_postgres::Config {
        self.config.clone()
    }

    /// `true` for a private cluster, `false` for `DATABASE_URL`.
    pub fn is_throwaway(&self) -> bool {
        self.cluster.is_some()
    }

    /// The data directory of the private cluster (`None` for `DATABASE_URL`).
    pub fn data_dir(&self) -> Option<&Path> {
        self.cluster.as_ref().map(|c| c.data_dir.as_path())
    }

    /// The pid of the private cluster's postmaster (`None` for `DATABASE_URL`).
    pub fn server_pid(&self) -> Option<u32> {
        self.cluster
            .as_ref()
            .and_then(|c| c.postmaster.as_ref())
            .map(Child::id)
    }

    /// How long start-up took (`initdb` until the server was ready);
    /// zero for `DATABASE_URL`.
    pub fn startup_time(&self) -> Duration {
        self.startup_time
    }

    /// Connects with `tokio-postgres` (no TLS) and spawns the connection task on the
    /// current tokio runtime.
    pub async fn connect(&self) -> Result<tokio_postgres::Client> {
        connect_with(&self.config).await
    }

    /// Creates a fresh, uniquely named schema and returns a handle to it; connections
    /// made through the handle have `search_path` set to the schema. The schema is
    /// dropped (`CASCADE`) when the handle is dropped.
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
    /// Stops the private server (immediate shutdown) and removes its directory;
    /// returns when both are done.
    fn drop(&mut self) {
        // `Cluster::drop` closes the watchdog's pipe and waits for the server and the
        // watchdog to finish.
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
    pub fn name(&self) -> &str {
        &self.name
    }

    /// A configuration whose connections use `search_path = <schema>`.
    pub fn config(&self) -> tokio_postgres::Config {
        self.config.clone()
    }

    /// Connects with `search_path` set to the schema (no TLS), spawning the
    /// connection task on the current tokio runtime.
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

// ---------------------------------------------------------------------------
// Finding the binaries

fn has_binaries(dir: &Path) -> bool {
    dir.join("initdb").is_file() && dir.join("postgres").is_file()
}

/// Parses a directory name like `15` or `9.6` into a sortable version.
fn parse_version(name: &str) -> Option<Vec<u32>> {
    name.split('.').map(|p| p.parse::<u32>().ok()).collect()
}

fn find_bindir() -> Result<PathBuf> {
    let mut searched = Vec::new();

    match Command::new("pg_config")
        .arg("--bindir")
        .stdin(Stdio::null())
        .output()
    {
        Ok(out) if out.status.success() => {
            let dir = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
            if has_binaries(&dir) {
                return Ok(dir);
            }
            searched.push(format!(
                "`pg_config --bindir` ({}: no initdb and postgres there)",
                dir.display()
            ));
        }
        Ok(out) => searched.push(format!(
            "`pg_config --bindir` (failed: {})",
            String::from_utf8_lossy(&out.stderr).trim()
        )),
        Err(e) => searched.push(format!("`pg_config --bindir` ({e})")),
    }

    let root = Path::new("/usr/lib/postgresql");
    let mut versions: Vec<(Vec<u32>, PathBuf)> = fs::read_dir(root)
        .map(|entries| {
            entries
                .filter_map(|e| e.ok())
                .filter_map(|e| {
                    let version = parse_version(e.file_name().to_str()?)?;
                    Some((version, e.path().join("bin")))
                })
                .collect()
        })
        .unwrap_or_default();
    versions.sort();
    if let Some((_, dir)) = versions.iter().rev().find(|(_, dir)| has_binaries(dir)) {
        return Ok(dir.clone());
    }
    searched.push("/usr/lib/postgresql/*/bin".to_owned());

    if let Some(path) = std::env::var_os("PATH") {
        if let Some(dir) = std::env::split_paths(&path).find(|d| has_binaries(d)) {
            return Ok(dir);
        }
    }
    searched.push("PATH".to_owned());

    Err(err(
        "find PostgreSQL binaries (initdb, postgres)",
        format!(
            "no PostgreSQL server binaries found; searched {}. To fix: {HOW_TO_FIX}",
            searched.join(", ")
        ),
    ))
}

// ---------------------------------------------------------------------------
// Temp dir, users

fn make_temp_dir() -> Result<PathBuf> {
    let candidates = [std::env::temp_dir(), PathBuf::from("/tmp")];
    let Some(base) = candidates
        .iter()
        .find(|b| b.as_os_str().len() + 40 <= MAX_DIR_LEN && b.is_dir())
    else {
        return Err(err(
            "create temp dir",
            format!(
                "{} is too long for a unix socket path and /tmp does not exist; \
                 set TMPDIR to a short directory",
                std::env::temp_dir().display()
            ),
        ));
    };
    let mut last_error = None;
    for _ in 0..100 {
        let name = format!(
            "pgp-{}-{}-{:x}",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::Relaxed),
            nanos_now() % (1 << 40)
        );
        let dir = base.join(name);
        match fs::DirBuilder::new().mode(0o700).create(&dir) {
            Ok(()) => return Ok(dir),
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => last_error = Some(e),
            Err(e) => return Err(err(format!("create {}", dir.display()), e.to_string())),
        }
    }
    Err(err(
        format!("create temp dir in {}", base.display()),
        last_error.map(|e| e.to_string()).unwrap_or_default(),
    ))
}

/// The uid/gid to run the server as (when we are root).
#[derive(Debug, Clone, Copy)]
struct RunAs {
    uid: u32,
    gid: u32,
}

/// `Some(postgres user)` when running as root (the owner of the dir we just made is
/// our effective uid), after handing the dir to that user.
fn run_as_user(dir: &Path) -> Result<Option<RunAs>> {
    let meta =
        fs::metadata(dir).map_err(|e| err(format!("stat {}", dir.display()), e.to_string()))?;
    if meta.uid() != 0 {
        return Ok(None);
    }
    let user = postgres_user()?;
    chown(dir, user)?;
    Ok(Some(user))
}

fn chown(path: &Path, user: RunAs) -> Result<()> {
    std::os::unix::fs::chown(path, Some(user.uid), Some(user.gid)).map_err(|e| {
        err(
            format!("chown {}:{} {}", user.uid, user.gid, path.display()),
            e.to_string(),
        )
    })
}

fn postgres_user() -> Result<RunAs> {
    if let Ok(passwd) = fs::read_to_string("/etc/passwd") {
        if let Some(user) = parse_passwd(&passwd, "postgres") {
            return Ok(user);
        }
    }
    // Users from other sources (NSS, LDAP): ask `id`.
    let id = |flag: &str| -> Option<u32> {
        let out = Command::new("id")
            .args([flag, "postgres"])
            .stdin(Stdio::null())
            .output()
            .ok()?;
        if !out.status.success() {
            return None;
        }
        String::from_utf8_lossy(&out.stdout).trim().parse().ok()
    };
    match (id("-u"), id("-g")) {
        (Some(uid), Some(gid)) if uid != 0 => Ok(RunAs { uid, gid }),
        _ => Err(err(
            "find the `postgres` user",
            format!(
                "running as root, and initdb refuses to run as root, but there is no \
                 `postgres` system user to run the cluster as (looked in /etc/passwd and \
                 `id postgres`); create one (e.g. `useradd --system postgres`), run the \
                 tests as a normal user, or {HOW_TO_FIX}"
            ),
        )),
    }
}

fn parse_passwd(passwd: &str, name: &str) -> Option<RunAs> {
    passwd.lines().find_map(|line| {
        let mut fields = line.split(':');
        if fields.next()? != name {
            return None;
        }
        let _password = fields.next()?;
        let uid = fields.next()?.parse().ok()?;
        let gid = fields.next()?.parse().ok()?;
        (uid != 0).then_some(RunAs { uid, gid })
    })
}

/// How `initdb` and `postgres` are run.
struct ChildEnv<'a> {
    dir: &'a Path,
    run_as: Option<RunAs>,
}

impl ChildEnv<'_> {
    /// Extra advice for errors of `initdb`/`postgres` when they run as `postgres`.
    fn hint(&self) -> String {
        match self.run_as {
            None => String::new(),
            Some(_) => format!(
                " (running as root: the cluster runs as the `postgres` user, which must be \
                 able to reach {}; if it cannot, set TMPDIR to a world-accessible directory \
                 such as /tmp)",
                self.dir.display()
            ),
        }
    }

    fn command(&self, program: &Path) -> Command {
        let mut cmd = Command::new(program);
        // A working directory the server user can read.
        cmd.current_dir(self.dir)
            .env("HOME", self.dir)
            .env("LC_ALL", "C");
        for var in PG_ENV {
            cmd.env_remove(var);
        }
        if let Some(user) = self.run_as {
            // std also drops the supplementary groups when root changes uid.
            cmd.uid(user.uid)
                .gid(user.gid)
                .env("USER", "postgres")
                .env("LOGNAME", "postgres");
        }
        cmd
    }
}

fn run_initdb(bindir: &Path, data_dir: &Path, env: &ChildEnv<'_>) -> Result<()> {
    let initdb = bindir.join("initdb");
    let mut args: Vec<&OsStr> = vec![
        "-D".as_ref(),
        data_dir.as_os_str(),
        "-U".as_ref(),
        "postgres".as_ref(),
        "--auth=trust".as_ref(),
        "-E".as_ref(),
        "UTF8".as_ref(),
        "--locale=C".as_ref(),
        "--no-sync".as_ref(),
        "--no-instructions".as_ref(),
    ];
    loop {
        let line = display_command(&initdb, &args);
        let out = env
            .command(&initdb)
            .args(&args)
            .stdin(Stdio::null())
            .output()
            .map_err(|e| err(line.clone(), format!("{e}{}", env.hint())))?;
        if out.status.success() {
            return Ok(());
        }
        let mut text = String::from_utf8_lossy(&out.stderr).into_owned();
        let stdout = String::from_utf8_lossy(&out.stdout);
        if !stdout.trim().is_empty() {
            text.push_str("\n(stdout)\n");
            text.push_str(&stdout);
        }
        // `--no-instructions` is PostgreSQL 13+: retry without it on older versions.
        let no_instructions: &OsStr = "--no-instructions".as_ref();
        if text.contains("no-instructions") && args.last() == Some(&no_instructions) {
            args.pop();
            let _ = fs::remove_dir_all(data_dir);
            continue;
        }
        text.push_str(&env.hint());
        return Err(err(line, text));
    }
}

// ---------------------------------------------------------------------------
// Server process

/// Waits until line 8 of `postmaster.pid` says "ready".
fn wait_ready(
    postmaster: &mut Child,
    data_dir: &Path,
    log_path: &Path,
    command_line: &str,
) -> Result<()> {
    let pid_file = data_dir.join("postmaster.pid");
    let deadline = Instant::now() + READY_TIMEOUT;
    loop {
        if let Ok(text) = fs::read_to_string(&pid_file) {
            if text.lines().nth(7).map(str::trim) == Some("ready") {
                return Ok(());
            }
        }
        match postmaster.try_wait() {
            Ok(Some(status)) => {
                return Err(err(
                    command_line,
                    format!(
                        "the server exited during start-up ({status}); server log {}:\n{}",
                        log_path.display(),
                        log_tail(log_path)
                    ),
                ))
            }
            Ok(None) => {}
            Err(e) => return Err(err(command_line, format!("waiting for the server: {e}"))),
        }
        if Instant::now() >= deadline {
            return Err(err(
                command_line,
                format!(
                    "the server was not ready after {READY_TIMEOUT:?}; server log {}:\n{}",
                    log_path.display(),
                    log_tail(log_path)
                ),
            ));
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

fn log_tail(path: &Path) -> String {
    const MAX: usize = 8000;
    match fs::File::open(path) {
        Ok(file) => {
            let lines: Vec<String> = io::BufReader::new(file)
                .lines()
                .map_while(|l| l.ok())
                .collect();
            let mut tail = String::new();
            for line in lines.iter().rev() {
                if tail.len() + line.len() > MAX {
                    break;
                }
                tail.insert_str(0, &format!("{line}\n"));
            }
            tail
        }
        Err(e) => format!("(cannot read the log: {e})"),
    }
}

/// Polls until the child exits; `false` on timeout.
fn wait_exit(child: &mut Child, timeout: Duration) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        match child.try_wait() {
            Ok(Some(_)) => return true,
            Ok(None) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(5)),
            Ok(None) => return false,
            // Already reaped or unknown to us: nothing to wait for.
            Err(_) => return true,
        }
    }
}

/// Immediate shutdown (SIGQUIT, via `kill`), then SIGKILL if it does not stop.
fn stop_postmaster(postmaster: &mut Child) {
    if let Ok(Some(_)) = postmaster.try_wait() {
        return;
    }
    let _ = Command::new("/bin/sh")
        .args(["-c", r#"kill -QUIT "$1" 2>/dev/null"#, "sh"])
        .arg(postmaster.id().to_string())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
    if !wait_exit(postmaster, Duration::from_secs(10)) {
        let _ = postmaster.kill();
        let _ = postmaster.wait();
    }
}

/// Starts the cleanup watchdog for a freshly created cluster directory.
fn spawn_watchdog(dir: PathBuf) -> Result<Cluster> {
    let spawned = Command::new("/bin/sh")
        .arg("-c")
        .arg(WATCHDOG)
        .arg("sh")
        .arg(&dir)
        .current_dir("/")
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        // Its own process group: a Ctrl-C in the terminal must not kill it before it
        // has cleaned up.
        .process_group(0)
        .spawn();
    let mut watchdog = match spawned {
        Ok(child) => child,
        Err(e) => {
            let _ = fs::remove_dir_all(&dir);
            return Err(err("/bin/sh -c <cleanup watchdog>", e.to_string()));
        }
    };
    let watchdog_stdin = watchdog.stdin.take();
    let cluster = Cluster {
        data_dir: dir.join("data"),
        dir,
        postmaster: None,
        watchdog,
        watchdog_stdin,
    };
    if cluster.watchdog_stdin.is_none() {
        return Err(err("/bin/sh -c <cleanup watchdog>", "no stdin pipe"));
    }
    Ok(cluster)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quotes_connection_string_values_only_when_needed() {
        assert_eq!(quote_value("/tmp/pgp-1-2-3"), "/tmp/pgp-1-2-3");
        assert_eq!(quote_value("/tmp/a b"), "'/tmp/a b'");
        assert_eq!(quote_value(r"it's\"), r"'it\'s\\'");
        assert_eq!(quote_value(""), "''");
    }

    #[test]
    fn connection_string_round_trips_through_the_parser() {
        let dir = "/tmp/with space/it's";
        let s = format!(
            "host={} port={PORT} user=postgres dbname=postgres",
            quote_value(dir)
        );
        let config: tokio_postgres::Config = s.parse().expect("parse");
        assert_eq!(
            config.get_hosts(),
            &[tokio_postgres::config::Host::Unix(PathBuf::from(dir))]
        );
        assert_eq!(config.get_ports(), &[PORT]);
        assert_eq!(config.get_user(), Some("postgres"));
        assert_eq!(config.get_dbname(), Some("postgres"));
    }

    #[test]
    fn schema_names_are_unique_plain_identifiers() {
        let a = unique_schema_name();
        let b = unique_schema_name();
        assert_ne!(a, b);
        for name in [&a, &b] {
            assert!(name.starts_with("pgp_t_"), "{name}");
            assert!(name.len() <= 63, "{name}");
            assert!(
                name.bytes()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == b'_'),
                "{name}"
            );
        }
    }

    #[test]
    fn schema_config_sets_search_path_and_keeps_options() {
        let base: tokio_postgres::Config = "host=/tmp user=u".parse().expect("parse");
        let c = schema_config(&base, "pgp_t_1");
        assert_eq!(c.get_options(), Some("-c search_path=pgp_t_1"));

        let base: tokio_postgres::Config = "host=/tmp options='-c work_mem=1MB'"
            .parse()
            .expect("parse");
        let c = schema_config(&base, "pgp_t_1");
        assert_eq!(
            c.get_options(),
            Some("-c work_mem=1MB -c search_path=pgp_t_1")
        );
    }

    #[test]
    fn database_url_mode_is_not_throwaway() {
        let db = TestDb::from_url("postgres://alice:secret@db.example/app").expect("parse");
        assert!(!db.is_throwaway());
        assert_eq!(db.data_dir(), None);
        assert_eq!(db.server_pid(), None);
        assert_eq!(db.startup_time(), Duration::ZERO);
        assert_eq!(
            db.connection_string(),
            "postgres://alice:secret@db.example/app"
        );
        assert_eq!(db.config().get_dbname(), Some("app"));
        let debug = format!("{db:?}");
        assert!(!debug.contains("secret"), "{debug}");
    }

    #[test]
    fn bad_database_url_is_a_testdb_error() {
        let e = TestDb::from_url("postgres://x:y@h:notaport/db").expect_err("must fail");
        assert!(
            matches!(&e, Error::TestDb { command, .. } if command == "parse DATABASE_URL"),
            "{e:?}"
        );
    }

    #[test]
    fn parses_passwd_entries() {
        let passwd = "root:x:0:0:root:/root:/bin/bash\n\
                      postgres:x:101:104:PostgreSQL administrator:/var/lib/postgresql:/bin/bash\n";
        let user = parse_passwd(passwd, "postgres").expect("found");
        assert_eq!((user.uid, user.gid), (101, 104));
        assert!(parse_passwd(passwd, "nobody").is_none());
        // Never "run as" root.
        assert!(parse_passwd(passwd, "root").is_none());
    }

    #[test]
    fn sorts_versions_numerically() {
        let mut v = [
            parse_version("9.6"),
            parse_version("15"),
            parse_version("10"),
        ];
        v.sort();
        assert_eq!(v, [Some(vec![9, 6]), Some(vec![10]), Some(vec![15])]);
        assert_eq!(parse_version("main"), None);
    }

    #[test]
    fn watchdog_script_interpolates_nothing() {
        assert!(WATCHDOG.contains(r#"kill -QUIT "$pid""#));
        assert!(WATCHDOG.contains(r#"rm -rf "$1""#));
        assert!(!WATCHDOG.contains("/tmp"));
    }
}
