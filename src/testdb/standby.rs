//! A streaming hot standby of the throwaway primary, for tests of read
//! replicas ([`TestDb::standby`]).
//!
//! The standby is made on first request with `pg_basebackup -R` (fast
//! checkpoint, WAL streamed, a replication slot so that a stopped standby can
//! catch up), in its own temporary directory and unix socket, and started with
//! the hot-standby settings the primary requires. The primary needs nothing
//! beyond what `initdb` gives it: `wal_level = replica`, WAL senders, and
//! trust authentication for local replication connections.
//!
//! Cleanup is the primary's: a watchdog process stops the standby and removes
//! its directory when the [`TestDb`] is dropped or the process exits in any
//! way (the watchdog reads the standby's current pid from `postmaster.pid`,
//! so it also finds a standby that was stopped and started again).

use std::collections::HashMap;
use std::ffi::OsString;
use std::future::Future;
use std::sync::{Mutex, MutexGuard, PoisonError};

use super::*;

/// Names a hot standby of the `DATABASE_URL` server (a libpq connection
/// string or URL). Without a private cluster, [`TestDb::standby`] uses it.
pub const STANDBY_URL_ENV: &str = "PGPATTERNS_STANDBY_URL";

/// How long a started standby may take to stream from the primary.
const STREAM_TIMEOUT: Duration = Duration::from_secs(30);

/// How long [`Standby::pause_replay`] waits for replay to stop.
const PAUSE_TIMEOUT: Duration = Duration::from_secs(10);

/// Settings that a hot standby must have at least as high as its primary
/// (else it refuses to start); copied from the running primary.
const HOT_STANDBY_SETTINGS: [&str; 5] = [
    "max_connections",
    "max_worker_processes",
    "max_wal_senders",
    "max_prepared_transactions",
    "max_locks_per_transaction",
];

/// `true` once the standby accepts read-only connections, is in recovery and
/// its WAL receiver streams from the primary.
const STREAMING_SQL: &str = "SELECT pg_is_in_recovery() \
     AND EXISTS (SELECT FROM pg_stat_wal_receiver WHERE status = 'streaming')";

/// The [`TestDb`]'s standby, started on first request.
#[derive(Default)]
pub(super) struct LazyStandby {
    standby: OnceLock<Standby>,
    /// Held while a standby is being made, so that two threads asking at once
    /// make one.
    init: Mutex<()>,
}

impl fmt::Debug for LazyStandby {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LazyStandby")
            .field("standby", &self.standby.get())
            .finish()
    }
}

impl LazyStandby {
    /// Stops and removes the standby, if one was made.
    pub(super) fn shut_down(&mut self) {
        drop(self.standby.take());
    }
}

impl TestDb {
    /// A streaming hot standby of this database, made and started on the
    /// first call (typically 1–3 s) and shared by every later call; it is
    /// stopped and removed with the database.
    ///
    /// For a private cluster, the standby is a `pg_basebackup -R` copy of it
    /// running in its own temp dir. With `DATABASE_URL`, the standby is the
    /// server named by `PGPATTERNS_STANDBY_URL` ([`STANDBY_URL_ENV`]), which
    /// must be a hot standby of that server.
    ///
    /// Blocks until the standby is in recovery, accepts connections and
    /// streams WAL from the primary. If making it fails, the next call tries
    /// again.
    ///
    /// # Errors
    /// [`Error::TestDb`] naming the step that failed: `DATABASE_URL` set
    /// without `PGPATTERNS_STANDBY_URL`, the primary not configured for
    /// replication, `pg_basebackup` or the standby server failing, or the
    /// standby not streaming in time.
    pub fn standby(&self) -> Result<&Standby> {
        if let Some(standby) = self.standby.standby.get() {
            return Ok(standby);
        }
        let _making = lock(&self.standby.init);
        if let Some(standby) = self.standby.standby.get() {
            return Ok(standby);
        }
        let standby = Standby::make(self)?;
        Ok(self.standby.standby.get_or_init(|| standby))
    }
}

/// A hot standby of a [`TestDb`], streaming its WAL ([`TestDb::standby`]).
///
/// Besides connecting, tests can pause and resume WAL replay (a lagging
/// replica) and stop and start the standby (a replica that is down).
pub struct Standby {
    connection_string: String,
    config: tokio_postgres::Config,
    startup_time: Duration,
    data_dir: Option<PathBuf>,
    /// `None` for a standby named by `PGPATTERNS_STANDBY_URL`.
    server: Option<Mutex<Server>>,
}

/// The private standby's processes and how to start it again.
struct Server {
    cluster: Cluster,
    postgres: PathBuf,
    args: Vec<OsString>,
    run_as: Option<RunAs>,
    log_path: PathBuf,
}

impl fmt::Debug for Standby {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut d = f.debug_struct("Standby");
        match &self.server {
            // The URL may contain a password: do not print it.
            None => d.field("connection_string", &"<PGPATTERNS_STANDBY_URL>"),
            Some(_) => d.field("connection_string", &self.connection_string),
        };
        d.field("throwaway", &self.is_throwaway())
            .field("data_dir", &self.data_dir())
            .field("server_pid", &self.server_pid())
            .field("startup_time", &self.startup_time)
            .finish()
    }
}

impl Standby {
    fn make(primary: &TestDb) -> Result<Standby> {
        match &primary.cluster {
            Some(cluster) => Self::start_private(primary, &cluster.dir),
            None => Self::from_env(),
        }
    }

    fn from_env() -> Result<Standby> {
        let url = match std::env::var_os(STANDBY_URL_ENV) {
            Some(url) if !url.is_empty() => url,
            _ => {
                return Err(err(
                    "find a standby",
                    format!(
                        "DATABASE_URL is set, so there is no private cluster to make a standby \
                         of; set {STANDBY_URL_ENV} to a hot standby of that server, or unset \
                         DATABASE_URL to use a private cluster"
                    ),
                ))
            }
        };
        let url = url
            .to_str()
            .ok_or_else(|| err(format!("read {STANDBY_URL_ENV}"), "not valid UTF-8"))?;
        let config = url
            .parse::<tokio_postgres::Config>()
            .map_err(|e| err(format!("parse {STANDBY_URL_ENV}"), e.to_string()))?;
        let in_recovery = query_bool(config.clone(), "SELECT pg_is_in_recovery()")?;
        if !in_recovery {
            return Err(err(
                format!("check {STANDBY_URL_ENV}"),
                "the server is not in recovery: it is not a standby",
            ));
        }
        Ok(Standby {
            connection_string: url.to_owned(),
            config,
            startup_time: Duration::ZERO,
            data_dir: None,
            server: None,
        })
    }

    fn start_private(primary: &TestDb, primary_dir: &Path) -> Result<Standby> {
        let started = Instant::now();
        let settings = primary_settings(primary.config())?;
        let bindir = find_bindir()?;
        let dir = make_temp_dir()?;
        let run_as = match run_as_user(&dir) {
            Ok(run_as) => run_as,
            Err(e) => {
                let _ = fs::remove_dir_all(&dir);
                return Err(e);
            }
        };
        // The watchdog is sent no pid: at cleanup it reads the current one from
        // `postmaster.pid`, as the standby may have been restarted.
        let cluster = spawn_watchdog(dir)?;
        let dir = cluster.dir.clone();
        let data_dir = cluster.data_dir.clone();
        let env = ChildEnv { dir: &dir, run_as };

        let slot = format!(
            "pgpatterns_standby_{}_{}",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::Relaxed)
        );
        let basebackup = bindir.join("pg_basebackup");
        let port = PORT.to_string();
        let args: Vec<&OsStr> = vec![
            "-h".as_ref(),
            primary_dir.as_os_str(),
            "-p".as_ref(),
            port.as_ref(),
            "-U".as_ref(),
            "postgres".as_ref(),
            "-D".as_ref(),
            data_dir.as_os_str(),
            // standby.signal + primary_conninfo (and the slot) for streaming.
            "-R".as_ref(),
            "-X".as_ref(),
            "stream".as_ref(),
            "--checkpoint=fast".as_ref(),
            "--no-sync".as_ref(),
            "-C".as_ref(),
            "-S".as_ref(),
            slot.as_ref(),
        ];
        let line = display_command(&basebackup, &args);
        let out = env
            .command(&basebackup)
            .args(&args)
            .stdin(Stdio::null())
            .output()
            .map_err(|e| err(line.clone(), format!("{e}{}", env.hint())))?;
        if !out.status.success() {
            return Err(err(
                line,
                format!("{}{}", String::from_utf8_lossy(&out.stderr), env.hint()),
            ));
        }

        let log_path = dir.join("server.log");
        let mut args: Vec<OsString> = [
            "-D".into(),
            data_dir.clone().into_os_string(),
            "-k".into(),
            dir.clone().into_os_string(),
            "-c".into(),
            "listen_addresses=".into(),
            "-p".into(),
            port.into(),
            "-F".into(),
            "-c".into(),
            "fsync=off".into(),
            "-c".into(),
            "shared_buffers=64MB".into(),
            "-c".into(),
            "hot_standby=on".into(),
            // Reconnect to the primary quickly after a restart.
            "-c".into(),
            "wal_retrieve_retry_interval=100ms".into(),
        ]
        .into();
        for name in HOT_STANDBY_SETTINGS {
            if let Some(value) = settings.get(name) {
                args.push("-c".into());
                args.push(format!("{name}={value}").into());
            }
        }
        let mut server = Server {
            cluster,
            postgres: bindir.join("postgres"),
            args,
            run_as,
            log_path,
        };
        server.spawn()?;

        let mut config = tokio_postgres::Config::new();
        config
            .host_path(&dir)
            .port(PORT)
            .user("postgres")
            .dbname("postgres");
        wait_streaming(&config)?;
        let connection_string = format!(
            "host={} port={PORT} user=postgres dbname=postgres",
            quote_value(&dir.to_string_lossy())
        );
        Ok(Standby {
            connection_string,
            config,
            startup_time: started.elapsed(),
            data_dir: Some(data_dir),
            server: Some(Mutex::new(server)),
        })
    }

    /// The libpq key=value connection string of the private standby, or
    /// `PGPATTERNS_STANDBY_URL` as given.
    #[must_use]
    pub fn connection_string(&self) -> &str {
        &self.connection_string
    }

    /// The standby's configuration for `tokio-postgres`.
    #[must_use]
    pub fn config(&self) -> tokio_postgres::Config {
        self.config.clone()
    }

    /// A configuration for the standby whose connections use
    /// `search_path = <schema>`: the replica side of a test's schema (the
    /// schema and its tables reach the standby by replication).
    #[must_use]
    pub fn config_for(&self, schema: &TestSchema) -> tokio_postgres::Config {
        schema_config(&self.config, schema.name())
    }

    /// Connects to the standby (no TLS), spawning the connection task on the
    /// current tokio runtime.
    ///
    /// # Errors
    /// [`Error::TestDb`] outside a tokio runtime, or when the connection
    /// fails (e.g. the standby is stopped).
    pub async fn connect(&self) -> Result<tokio_postgres::Client> {
        connect_with(&self.config).await
    }

    /// Connects to the standby with `search_path` set to `schema`.
    ///
    /// # Errors
    /// As [`Standby::connect`].
    pub async fn connect_for(&self, schema: &TestSchema) -> Result<tokio_postgres::Client> {
        connect_with(&self.config_for(schema)).await
    }

    /// `true` for a private standby, `false` for `PGPATTERNS_STANDBY_URL`.
    #[must_use]
    pub fn is_throwaway(&self) -> bool {
        self.server.is_some()
    }

    /// The private standby's data directory.
    #[must_use]
    pub fn data_dir(&self) -> Option<&Path> {
        self.data_dir.as_deref()
    }

    /// The pid of the private standby's postmaster; `None` while it is
    /// stopped, and for `PGPATTERNS_STANDBY_URL`.
    #[must_use]
    pub fn server_pid(&self) -> Option<u32> {
        let server = self.server.as_ref()?;
        let server = lock(server);
        server.cluster.postmaster.as_ref().map(Child::id)
    }

    /// How long making the standby took (base backup until streaming); zero
    /// for `PGPATTERNS_STANDBY_URL`.
    #[must_use]
    pub fn startup_time(&self) -> Duration {
        self.startup_time
    }

    /// Pauses WAL replay (`pg_wal_replay_pause()` on the standby) and waits
    /// until replay has stopped: from then on the standby falls behind the
    /// primary as the primary writes, until [`resume_replay`](Self::resume_replay).
    ///
    /// # Errors
    /// [`Error::TestDb`] when the standby cannot be reached, the function is
    /// refused, or replay does not stop in time.
    pub async fn pause_replay(&self) -> Result<()> {
        let client = self.connect().await?;
        simple(&client, "SELECT pg_wal_replay_pause()").await?;
        // PostgreSQL 14+ tells when replay has actually stopped; before that,
        // the request is all there is.
        let version = simple(&client, "SHOW server_version_num").await?;
        if version.parse::<u32>().unwrap_or(0) < 140_000 {
            return Ok(());
        }
        let deadline = Instant::now() + PAUSE_TIMEOUT;
        loop {
            let state = simple(&client, "SELECT pg_get_wal_replay_pause_state()").await?;
            if state == "paused" {
                return Ok(());
            }
            if Instant::now() >= deadline {
                return Err(err(
                    "pg_wal_replay_pause()",
                    format!("replay still {state:?} after {PAUSE_TIMEOUT:?}"),
                ));
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    /// Resumes WAL replay (`pg_wal_replay_resume()` on the standby).
    ///
    /// # Errors
    /// [`Error::TestDb`] when the standby cannot be reached or the function
    /// is refused.
    pub async fn resume_replay(&self) -> Result<()> {
        let client = self.connect().await?;
        simple(&client, "SELECT pg_wal_replay_resume()").await?;
        Ok(())
    }

    /// `true` while the private standby's server runs (always `true` for
    /// `PGPATTERNS_STANDBY_URL`, which this crate does not control).
    #[must_use]
    pub fn is_running(&self) -> bool {
        match &self.server {
            None => true,
            Some(server) => lock(server).running(),
        }
    }

    /// Stops the private standby (fast shutdown) and waits until it is gone;
    /// its connections are closed. Does nothing when it is already stopped.
    /// Blocks.
    ///
    /// # Errors
    /// [`Error::TestDb`] for a standby named by `PGPATTERNS_STANDBY_URL`,
    /// which this crate cannot stop.
    pub fn stop(&self) -> Result<()> {
        let mut server = self.private("stop")?;
        server.stop();
        Ok(())
    }

    /// Starts the private standby again after [`stop`](Self::stop) and waits
    /// until it streams from the primary (it first replays what it missed).
    /// Does nothing when it runs. Blocks.
    ///
    /// # Errors
    /// [`Error::TestDb`] for a standby named by `PGPATTERNS_STANDBY_URL`, or
    /// when the server fails to start or to stream in time.
    pub fn start(&self) -> Result<()> {
        {
            let mut server = self.private("start")?;
            if server.running() {
                return Ok(());
            }
            server.spawn()?;
        }
        wait_streaming(&self.config)
    }

    fn private(&self, what: &str) -> Result<MutexGuard<'_, Server>> {
        match &self.server {
            Some(server) => Ok(lock(server)),
            None => Err(err(
                format!("{what} the standby"),
                format!(
                    "the standby named by {STANDBY_URL_ENV} is not a throwaway server: \
                     pgpatterns cannot {what} it"
                ),
            )),
        }
    }
}

impl Server {
    fn running(&mut self) -> bool {
        match &mut self.cluster.postmaster {
            Some(child) => matches!(child.try_wait(), Ok(None)),
            None => false,
        }
    }

    /// Starts the server and waits until it accepts read-only connections.
    fn spawn(&mut self) -> Result<()> {
        let log = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log_path)
            .map_err(|e| err(format!("open {}", self.log_path.display()), e.to_string()))?;
        if let Some(user) = self.run_as {
            chown(&self.log_path, user)?;
        }
        let log2 = log
            .try_clone()
            .map_err(|e| err("duplicate server log handle", e.to_string()))?;
        let args: Vec<&OsStr> = self.args.iter().map(OsString::as_os_str).collect();
        let command_line = display_command(&self.postgres, &args);
        let env = ChildEnv {
            dir: &self.cluster.dir,
            run_as: self.run_as,
        };
        let child = env
            .command(&self.postgres)
            .args(&args)
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(log2)
            .process_group(0)
            .spawn()
            .map_err(|e| err(command_line.clone(), format!("{e}{}", env.hint())))?;
        let child = self.cluster.postmaster.insert(child);
        wait_ready(child, &self.cluster.data_dir, &self.log_path, &command_line)
    }

    /// Fast shutdown (SIGINT), then immediate (SIGQUIT) and SIGKILL if the
    /// server does not stop in time.
    fn stop(&mut self) {
        let Some(mut child) = self.cluster.postmaster.take() else {
            return;
        };
        if let Ok(None) = child.try_wait() {
            let _ = Command::new("/bin/sh")
                .args(["-c", r#"kill -INT "$1" 2>/dev/null"#, "sh"])
                .arg(child.id().to_string())
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status();
            if !wait_exit(&mut child, STOP_TIMEOUT) {
                stop_postmaster(&mut child);
            }
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic while it was held leaves the value usable as it is.
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Runs `work` to completion on a new thread with its own runtime, so that
/// blocking methods also work inside a tokio runtime.
fn on_own_runtime<T, F, Fut>(work: F) -> Result<T>
where
    T: Send + 'static,
    F: FnOnce() -> Fut + Send + 'static,
    Fut: Future<Output = Result<T>>,
{
    let thread = std::thread::Builder::new()
        .name("pgpatterns-standby".into())
        .spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .map_err(|e| err("build tokio runtime", e.to_string()))?;
            runtime.block_on(work())
        })
        .map_err(|e| err("spawn a thread", e.to_string()))?;
    thread
        .join()
        .map_err(|_| err("standby helper thread", "it panicked"))?
}

/// Runs `sql` (one row, one column) and returns the value as text.
async fn simple(client: &tokio_postgres::Client, sql: &str) -> Result<String> {
    let messages = client
        .simple_query(sql)
        .await
        .map_err(|e| err(sql, pg_error_text(&e)))?;
    messages
        .iter()
        .find_map(|m| match m {
            tokio_postgres::SimpleQueryMessage::Row(row) => {
                Some(row.get(0).unwrap_or("").to_owned())
            }
            _ => None,
        })
        .ok_or_else(|| err(sql, "returned no row"))
}

fn query_bool(config: tokio_postgres::Config, sql: &'static str) -> Result<bool> {
    on_own_runtime(move || async move {
        let client = connect_with(&config).await?;
        Ok(simple(&client, sql).await? == "t")
    })
}

/// The primary's hot-standby settings, after checking it can stream WAL.
fn primary_settings(config: tokio_postgres::Config) -> Result<HashMap<String, String>> {
    const SQL: &str = "SELECT name, setting FROM pg_settings WHERE name IN \
        ('wal_level', 'max_connections', 'max_worker_processes', 'max_wal_senders', \
         'max_prepared_transactions', 'max_locks_per_transaction')";
    let settings = on_own_runtime(move || async move {
        let client = connect_with(&config).await?;
        let messages = client
            .simple_query(SQL)
            .await
            .map_err(|e| err(SQL, pg_error_text(&e)))?;
        Ok(messages
            .iter()
            .filter_map(|m| match m {
                tokio_postgres::SimpleQueryMessage::Row(row) => Some((
                    row.get(0).unwrap_or("").to_owned(),
                    row.get(1).unwrap_or("").to_owned(),
                )),
                _ => None,
            })
            .collect::<HashMap<_, _>>())
    })?;
    let get = |name: &str| settings.get(name).map(String::as_str).unwrap_or("");
    if get("wal_level") == "minimal" {
        return Err(err(
            "make a standby",
            "the primary runs with wal_level = minimal; a standby needs replica or logical",
        ));
    }
    if get("max_wal_senders") == "0" {
        return Err(err(
            "make a standby",
            "the primary runs with max_wal_senders = 0; a standby needs a WAL sender",
        ));
    }
    Ok(settings)
}

/// Waits until the standby is in recovery and streams from the primary.
fn wait_streaming(config: &tokio_postgres::Config) -> Result<()> {
    let config = config.clone();
    on_own_runtime(move || async move {
        let deadline = Instant::now() + STREAM_TIMEOUT;
        let mut last: String;
        loop {
            match connect_with(&config).await {
                Ok(client) => match simple(&client, STREAMING_SQL).await {
                    Ok(answer) if answer == "t" => return Ok(()),
                    Ok(_) => last = "in recovery but not streaming from the primary yet".into(),
                    Err(e) => last = e.to_string(),
                },
                Err(e) => last = e.to_string(),
            }
            if Instant::now() >= deadline {
                return Err(err(
                    "wait for the standby to stream",
                    format!("not streaming after {STREAM_TIMEOUT:?}: {last}"),
                ));
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
}
