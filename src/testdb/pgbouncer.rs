//! [`PgBouncer`]: a pooler in transaction mode in front of a [`TestDb`].

use std::os::unix::fs::OpenOptionsExt;
use std::sync::{Mutex, PoisonError};

use tokio_postgres::config::{Host, SslMode};

use super::*;

/// The port number of the pooler. It only names the socket file
/// (`<dir>/.s.PGSQL.<port>`): PgBouncer does not listen on the network.
const POOLER_PORT: u16 = 6432;
/// How long to wait for PgBouncer to accept connections.
const POOLER_READY_TIMEOUT: Duration = Duration::from_secs(15);
/// Server connections per pooler database entry: small, so that a test's
/// statements really do move between server connections.
const POOL_SIZE: u32 = 4;
/// How to get PgBouncer.
const HOW_TO_GET: &str = "install PgBouncer (e.g. `apt-get install -y pgbouncer`)";

/// The watchdog script, run as `sh -c POOLER_WATCHDOG sh <dir>` with a pipe on
/// stdin: reads PgBouncer's pid, waits for EOF, sends SIGTERM (immediate
/// shutdown), escalates to SIGKILL after ~5 s, and removes the directory.
/// Nothing is interpolated into the script; the pid is validated as digits.
const POOLER_WATCHDOG: &str = r#"trap '' INT HUP
pid=
read -r pid || :
cat >/dev/null 2>&1
case "$pid" in '' | *[!0-9]*) pid= ;; esac
if [ -n "$pid" ] && kill -TERM "$pid" 2>/dev/null; then
  i=0
  while kill -0 "$pid" 2>/dev/null; do
    case "$(cat "/proc/$pid/stat" 2>/dev/null)" in *") Z "*) break ;; esac
    i=$((i + 1))
    if [ "$i" -eq 100 ]; then kill -KILL "$pid" 2>/dev/null; fi
    if [ "$i" -ge 200 ]; then break; fi
    sleep 0.05 2>/dev/null || sleep 1
  done
fi
rm -rf "$1"
"#;

/// A PgBouncer in transaction pooling mode in front of a [`TestDb`], for
/// tests of what works through a pooler.
///
/// [`TestDb::pgbouncer`] starts it on first use: the `pgbouncer` binary
/// (`apt-get install -y pgbouncer`) runs in a fresh temp dir with
/// `pool_mode = transaction`, listening only on a unix socket there, with
/// trust authentication for the server's user. It forwards to the private
/// cluster, or to the server of `DATABASE_URL` with that URL's user and
/// password (written to a file only its user can read). When the process
/// runs as root, PgBouncer runs as the `postgres` user (it refuses root).
///
/// [`TestDb::pooled_schema`] gives each test its own schema through the
/// pooler. A transaction-mode pooler does not pass `options` (such as
/// `-c search_path=…`) to the server, so each schema gets its own pooler
/// database entry whose server connections run `SET search_path` when they
/// are opened (`connect_query`); the entry is added by rewriting the
/// configuration and sending `RELOAD` to the pooler's admin console.
///
/// An externally managed pooler cannot be used that way (its configuration
/// is not ours to rewrite), so there is no URL setting for one: with
/// `DATABASE_URL`, a local PgBouncer is started in front of that server.
///
/// Cleanup works as for the cluster: a watchdog process stops PgBouncer
/// (`SIGTERM`) and removes its directory when the [`TestDb`] is dropped or
/// the test process exits in any way.
pub struct PgBouncer {
    dir: PathBuf,
    config: tokio_postgres::Config,
    user: String,
    /// The `[databases]` entry's connection settings, without the alias and
    /// `connect_query`.
    upstream: String,
    /// `[pgbouncer]` settings and the upstream database's own entry.
    settings: String,
    /// One `[databases]` line per pooled schema; the lock also serialises
    /// rewriting the file and reloading.
    aliases: Mutex<Vec<String>>,
    /// The user PgBouncer runs as, when we are root.
    run_as: Option<RunAs>,
    process: Option<Child>,
    watchdog: Child,
    watchdog_stdin: Option<ChildStdin>,
}

impl fmt::Debug for PgBouncer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The upstream settings may hold DATABASE_URL's password.
        f.debug_struct("PgBouncer")
            .field("dir", &self.dir)
            .field("pid", &self.pid())
            .finish_non_exhaustive()
    }
}

impl PgBouncer {
    /// The libpq key=value connection string of the server's database
    /// through the pooler (`host=<socket dir> port=6432 user=… dbname=…`).
    #[must_use]
    pub fn connection_string(&self) -> String {
        format!(
            "host={} port={POOLER_PORT} user={} dbname={}",
            quote_value(&self.dir.to_string_lossy()),
            quote_value(&self.user),
            quote_value(self.config.get_dbname().unwrap_or("postgres"))
        )
    }

    /// The configuration of the server's database through the pooler.
    #[must_use]
    pub fn config(&self) -> tokio_postgres::Config {
        self.config.clone()
    }

    /// The pid of the PgBouncer process.
    #[must_use]
    pub fn pid(&self) -> Option<u32> {
        self.process.as_ref().map(Child::id)
    }

    /// The directory holding the socket, the configuration and `pgbouncer.log`.
    #[must_use]
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Connects to the server's database through the pooler (tokio-postgres,
    /// no TLS), spawning the connection task on the current tokio runtime.
    ///
    /// # Errors
    /// [`Error::TestDb`] outside a tokio runtime, or when the connection
    /// fails.
    pub async fn connect(&self) -> Result<tokio_postgres::Client> {
        connect_with(&self.config).await
    }

    /// Adds a pooler database named like the schema whose server connections
    /// use it as `search_path`, and reloads the pooler.
    fn add_schema(&self, schema: &str) -> Result<tokio_postgres::Config> {
        let mut aliases = self.aliases.lock().unwrap_or_else(PoisonError::into_inner);
        aliases.push(format!(
            "{schema} = {} connect_query='SET search_path TO {schema}'",
            self.upstream
        ));
        self.write_ini(&aliases)?;
        self.reload()?;
        let mut config = self.config.clone();
        config.dbname(schema);
        Ok(config)
    }

    fn ini_path(&self) -> PathBuf {
        self.dir.join("pgbouncer.ini")
    }

    fn write_ini(&self, aliases: &[String]) -> Result<()> {
        let mut text = self.settings.clone();
        for line in aliases {
            text.push_str(line);
            text.push('\n');
        }
        // Written beside it, then renamed: PgBouncer never reads half a file.
        let path = self.ini_path();
        let tmp = self.dir.join("pgbouncer.ini.new");
        let write = || -> io::Result<()> {
            let mut file = fs::OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(true)
                .mode(0o600)
                .open(&tmp)?;
            file.write_all(text.as_bytes())?;
            file.sync_all()
        };
        write().map_err(|e| err(format!("write {}", tmp.display()), e.to_string()))?;
        if let Some(user) = self.run_as {
            chown(&tmp, user)?;
        }
        fs::rename(&tmp, &path)
            .map_err(|e| err(format!("rename to {}", path.display()), e.to_string()))
    }

    /// `RELOAD` on the admin console, from a thread with its own runtime (so
    /// it works inside and outside a tokio runtime); returns when PgBouncer
    /// has read the new configuration.
    fn reload(&self) -> Result<()> {
        let mut admin = self.config.clone();
        admin.dbname("pgbouncer");
        let spawned = std::thread::Builder::new()
            .name("pgpatterns-pgbouncer-reload".into())
            .spawn(move || {
                let runtime = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .map_err(|e| err("build tokio runtime", e.to_string()))?;
                runtime.block_on(async {
                    let (client, connection) =
                        admin.connect(tokio_postgres::NoTls).await.map_err(|e| {
                            err("connect to the PgBouncer admin console", pg_error_text(&e))
                        })?;
                    let task = tokio::spawn(connection);
                    let result =
                        client.simple_query("RELOAD").await.map(drop).map_err(|e| {
                            err("RELOAD (PgBouncer admin console)", pg_error_text(&e))
                        });
                    drop(client);
                    let _ = task.await;
                    result
                })
            })
            .map_err(|e| err("spawn thread to reload PgBouncer", e.to_string()))?;
        spawned
            .join()
            .unwrap_or_else(|_| Err(err("reload PgBouncer", "the reloading thread panicked")))
    }
}

impl Drop for PgBouncer {
    /// Stops PgBouncer and removes its directory; returns when both are done.
    fn drop(&mut self) {
        drop(self.watchdog_stdin.take());
        if let Some(process) = &mut self.process {
            if !wait_exit(process, STOP_TIMEOUT) {
                eprintln!(
                    "pgpatterns testdb: PgBouncer did not stop in {STOP_TIMEOUT:?}; killing it"
                );
                let _ = process.kill();
                let _ = process.wait();
            }
        }
        if !wait_exit(&mut self.watchdog, STOP_TIMEOUT) {
            let _ = self.watchdog.kill();
            let _ = self.watchdog.wait();
        }
        if fs::symlink_metadata(&self.dir).is_ok() {
            let _ = fs::remove_dir_all(&self.dir);
        }
    }
}

impl TestDb {
    /// The PgBouncer in transaction pooling mode in front of this database,
    /// started on first use (see [`PgBouncer`]). With `DATABASE_URL`, it
    /// forwards to that server with the URL's user and password.
    ///
    /// # Errors
    /// [`Error::TestDb`] naming the step that failed: `pgbouncer` not
    /// installed, no `postgres` user to run it as (when running as root), a
    /// connection setting PgBouncer cannot take (a password with a quote or
    /// backslash), or PgBouncer not starting; on every later call once
    /// start-up failed.
    pub fn pgbouncer(&self) -> Result<&PgBouncer> {
        let started = self
            .pgbouncer
            .get_or_init(|| start_pgbouncer(&self.config).map_err(split_error));
        match started {
            Ok(pooler) => Ok(pooler),
            Err((command, stderr)) => Err(err(command.clone(), stderr.clone())),
        }
    }

    /// Like [`TestDb::schema`], but connections made through the handle go
    /// through the [`pgbouncer`](Self::pgbouncer) (in transaction pooling
    /// mode) to a pooler database whose server connections use the schema as
    /// `search_path`. [`TestSchema::direct_config`] connects to the same
    /// schema without the pooler.
    ///
    /// # Errors
    /// As [`TestDb::schema`] and [`TestDb::pgbouncer`], or when the pooler
    /// cannot be reloaded with the new database entry.
    pub async fn pooled_schema(&self) -> Result<TestSchema> {
        let pooler = self.pgbouncer()?;
        let mut schema = self.schema().await?;
        schema.config = pooler.add_schema(&schema.name)?;
        Ok(schema)
    }
}

fn split_error(e: Error) -> (String, String) {
    match e {
        Error::TestDb { command, stderr } => (command, stderr),
        other => ("start PgBouncer".to_owned(), other.to_string()),
    }
}

fn find_pgbouncer() -> Result<PathBuf> {
    let mut dirs: Vec<PathBuf> = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).collect())
        .unwrap_or_default();
    dirs.extend(["/usr/sbin", "/usr/local/sbin", "/usr/bin", "/usr/local/bin"].map(PathBuf::from));
    dirs.into_iter()
        .map(|d| d.join("pgbouncer"))
        .find(|p| p.is_file())
        .ok_or_else(|| {
            err(
                "find the pgbouncer binary",
                format!(
                    "no `pgbouncer` in PATH or /usr/sbin, /usr/local/sbin; to fix: {HOW_TO_GET}"
                ),
            )
        })
}

/// A value for PgBouncer's configuration, single-quoted; `None` for text
/// PgBouncer cannot take quoted.
fn ini_value(value: &str) -> Option<String> {
    (!value.contains(['\'', '\\', '\n', '\r'])).then(|| format!("'{value}'"))
}

/// The `[databases]` connection settings for the upstream server.
fn upstream_settings(config: &tokio_postgres::Config) -> Result<String> {
    let setting = |name: &str, value: &str| {
        ini_value(value).map(|v| format!("{name}={v}")).ok_or_else(|| {
            err(
                "configure PgBouncer",
                format!("the server's {name} contains a quote, backslash or line break, which a PgBouncer configuration cannot hold"),
            )
        })
    };
    let host = match config.get_hosts().first() {
        Some(Host::Unix(dir)) => dir.to_string_lossy().into_owned(),
        Some(Host::Tcp(name)) => name.clone(),
        None => "localhost".to_owned(),
    };
    let port = config.get_ports().first().copied().unwrap_or(5432);
    let mut parts = vec![
        setting("host", &host)?,
        format!("port={port}"),
        setting("dbname", config.get_dbname().unwrap_or("postgres"))?,
        setting("user", config.get_user().unwrap_or("postgres"))?,
    ];
    if let Some(password) = config.get_password() {
        parts.push(setting("password", &String::from_utf8_lossy(password))?);
    }
    Ok(parts.join(" "))
}

fn start_pgbouncer(upstream: &tokio_postgres::Config) -> Result<PgBouncer> {
    let binary = find_pgbouncer()?;
    let upstream_line = upstream_settings(upstream)?;
    let user = upstream.get_user().unwrap_or("postgres").to_owned();
    let dbname = upstream.get_dbname().unwrap_or("postgres").to_owned();
    let dir = make_temp_dir()?;
    let run_as = run_as_user(&dir).map_err(|e| {
        let _ = fs::remove_dir_all(&dir);
        match e {
            Error::TestDb { command, stderr } => err(
                command,
                format!("{stderr} (PgBouncer refuses to run as root, like initdb)"),
            ),
            other => other,
        }
    })?;

    // From here on, dropping `pooler` cleans up (the watchdog, if we die).
    let spawned = Command::new("/bin/sh")
        .arg("-c")
        .arg(POOLER_WATCHDOG)
        .arg("sh")
        .arg(&dir)
        .current_dir("/")
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .process_group(0)
        .spawn();
    let mut watchdog = match spawned {
        Ok(child) => child,
        Err(e) => {
            let _ = fs::remove_dir_all(&dir);
            return Err(err(
                "/bin/sh -c <PgBouncer cleanup watchdog>",
                e.to_string(),
            ));
        }
    };
    let watchdog_stdin = watchdog.stdin.take();

    // A list setting: PgBouncer takes its items verbatim, without quotes.
    if !user
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b"_-.@".contains(&b))
    {
        return Err(err(
            "configure PgBouncer",
            format!("the user name {user:?} cannot be written into `admin_users` (letters, digits and _-.@ only)"),
        ));
    }
    let ssl = match upstream.get_ssl_mode() {
        SslMode::Disable => "disable",
        SslMode::Prefer => "prefer",
        _ => "require",
    };
    let settings = format!(
        "[pgbouncer]\n\
         listen_port = {POOLER_PORT}\n\
         unix_socket_dir = {dir}\n\
         auth_type = trust\n\
         auth_file = {dir}/userlist.txt\n\
         admin_users = {user}\n\
         pool_mode = transaction\n\
         default_pool_size = {POOL_SIZE}\n\
         max_client_conn = 1000\n\
         server_idle_timeout = 10\n\
         server_tls_sslmode = {ssl}\n\
         ignore_startup_parameters = extra_float_digits\n\
         \n\
         [databases]\n\
         {dbname_key} = {upstream_line}\n",
        dir = dir.display(),
        dbname_key = dbname_key(&dbname)?,
    );
    let mut pooler = PgBouncer {
        config: pooler_config(&dir, &user, &dbname),
        dir: dir.clone(),
        user: user.clone(),
        upstream: upstream_line,
        settings,
        aliases: Mutex::new(Vec::new()),
        run_as,
        process: None,
        watchdog,
        watchdog_stdin,
    };
    if pooler.watchdog_stdin.is_none() {
        return Err(err(
            "/bin/sh -c <PgBouncer cleanup watchdog>",
            "no stdin pipe",
        ));
    }

    let userlist = dir.join("userlist.txt");
    fs::write(
        &userlist,
        format!("\"{}\" \"\"\n", user.replace('"', "\"\"")),
    )
    .map_err(|e| err(format!("write {}", userlist.display()), e.to_string()))?;
    pooler.write_ini(&[])?;
    let log_path = dir.join("pgbouncer.log");
    let log = fs::File::create(&log_path)
        .map_err(|e| err(format!("create {}", log_path.display()), e.to_string()))?;
    if let Some(user) = run_as {
        chown(&userlist, user)?;
        chown(&log_path, user)?;
    }
    let log2 = log
        .try_clone()
        .map_err(|e| err("duplicate PgBouncer log handle", e.to_string()))?;

    let ini = pooler.ini_path();
    let command_line = format!("{} {}", binary.display(), ini.display());
    let env = ChildEnv { dir: &dir, run_as };
    let process = env
        .command(&binary)
        .arg(&ini)
        .stdin(Stdio::null())
        .stdout(log)
        .stderr(log2)
        .process_group(0)
        .spawn()
        .map_err(|e| err(command_line.clone(), format!("{e}{}", env.hint())))?;
    let pid = process.id();
    let process = pooler.process.insert(process);
    if let Some(stdin) = &mut pooler.watchdog_stdin {
        stdin
            .write_all(format!("{pid}\n").as_bytes())
            .map_err(|e| {
                err(
                    "send PgBouncer's pid to its cleanup watchdog",
                    e.to_string(),
                )
            })?;
    }
    wait_listening(process, &dir, &log_path, &command_line)?;
    Ok(pooler)
}

/// A `[databases]` key: the database name, quoted when it needs it.
fn dbname_key(dbname: &str) -> Result<String> {
    if dbname
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b == b'_')
    {
        return Ok(dbname.to_owned());
    }
    if dbname.contains('"') {
        return Err(err(
            "configure PgBouncer",
            "the database name contains a double quote, which a PgBouncer configuration cannot hold",
        ));
    }
    Ok(format!("\"{dbname}\""))
}

fn pooler_config(dir: &Path, user: &str, dbname: &str) -> tokio_postgres::Config {
    let mut config = tokio_postgres::Config::new();
    config
        .host_path(dir)
        .port(POOLER_PORT)
        .user(user)
        .dbname(dbname)
        .connect_timeout(Duration::from_secs(10));
    config
}

/// Waits until PgBouncer's socket exists (it creates it once listening).
fn wait_listening(
    process: &mut Child,
    dir: &Path,
    log_path: &Path,
    command_line: &str,
) -> Result<()> {
    let socket = dir.join(format!(".s.PGSQL.{POOLER_PORT}"));
    let deadline = Instant::now() + POOLER_READY_TIMEOUT;
    loop {
        if socket.exists() && std::os::unix::net::UnixStream::connect(&socket).is_ok() {
            return Ok(());
        }
        match process.try_wait() {
            Ok(Some(status)) => {
                return Err(err(
                    command_line,
                    format!(
                        "PgBouncer exited during start-up ({status}); its log:\n{}",
                        log_tail(log_path)
                    ),
                ))
            }
            Ok(None) => {}
            Err(e) => return Err(err(command_line, format!("waiting for PgBouncer: {e}"))),
        }
        if Instant::now() >= deadline {
            return Err(err(
                command_line,
                format!(
                    "PgBouncer was not listening after {POOLER_READY_TIMEOUT:?}; its log:\n{}",
                    log_tail(log_path)
                ),
            ));
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn upstream_settings_quote_values_and_refuse_what_cannot_be_quoted() {
        let config: tokio_postgres::Config =
            "host=/tmp/pgp-1 port=5433 user=alice dbname=app password=s3cret"
                .parse()
                .expect("parse");
        assert_eq!(
            upstream_settings(&config).expect("settings"),
            "host='/tmp/pgp-1' port=5433 dbname='app' user='alice' password='s3cret'"
        );
        let config: tokio_postgres::Config = "host=db.example user=bob password='it\\'s'"
            .parse()
            .expect("parse");
        let e = upstream_settings(&config).expect_err("a quote in the password");
        assert!(e.to_string().contains("password"), "{e}");
        assert!(
            !e.to_string().contains("it's"),
            "the password is not shown: {e}"
        );
    }

    #[test]
    fn database_keys_are_plain_or_quoted() {
        assert_eq!(dbname_key("postgres").expect("plain"), "postgres");
        assert_eq!(dbname_key("my-app").expect("quoted"), "\"my-app\"");
        assert!(dbname_key("a\"b").is_err());
    }

    #[test]
    fn pooler_watchdog_interpolates_nothing() {
        assert!(POOLER_WATCHDOG.contains(r#"kill -TERM "$pid""#));
        assert!(POOLER_WATCHDOG.contains(r#"rm -rf "$1""#));
        assert!(!POOLER_WATCHDOG.contains("/tmp"));
    }
}
