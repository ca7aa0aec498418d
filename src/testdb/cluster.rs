//! The private cluster: finding the binaries, the temp dir, running as the
//! `postgres` user, initdb, start-up, stop, and the cleanup watchdog.

use super::*;

/// The private cluster's processes and directory; dropping it stops the server and
/// removes the directory (also on the failure paths of start-up).
#[derive(Debug)]
pub(super) struct Cluster {
    /// The temp dir: socket, `server.log` and `data/`.
    pub(super) dir: PathBuf,
    pub(super) data_dir: PathBuf,
    /// `None` until the server has been spawned.
    pub(super) postmaster: Option<Child>,
    pub(super) watchdog: Child,
    /// The only write end of the watchdog's stdin: closing it triggers the cleanup.
    pub(super) watchdog_stdin: Option<ChildStdin>,
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

// ---------------------------------------------------------------------------
// Finding the binaries

pub(super) fn has_binaries(dir: &Path) -> bool {
    dir.join("initdb").is_file() && dir.join("postgres").is_file()
}

/// Parses a directory name like `15` or `9.6` into a sortable version.
pub(super) fn parse_version(name: &str) -> Option<Vec<u32>> {
    name.split('.').map(|p| p.parse::<u32>().ok()).collect()
}

pub(super) fn find_bindir() -> Result<PathBuf> {
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

pub(super) fn make_temp_dir() -> Result<PathBuf> {
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
pub(super) struct RunAs {
    pub(super) uid: u32,
    pub(super) gid: u32,
}

/// `Some(postgres user)` when running as root (the owner of the dir we just made is
/// our effective uid), after handing the dir to that user.
pub(super) fn run_as_user(dir: &Path) -> Result<Option<RunAs>> {
    let meta =
        fs::metadata(dir).map_err(|e| err(format!("stat {}", dir.display()), e.to_string()))?;
    if meta.uid() != 0 {
        return Ok(None);
    }
    let user = postgres_user()?;
    chown(dir, user)?;
    Ok(Some(user))
}

pub(super) fn chown(path: &Path, user: RunAs) -> Result<()> {
    std::os::unix::fs::chown(path, Some(user.uid), Some(user.gid)).map_err(|e| {
        err(
            format!("chown {}:{} {}", user.uid, user.gid, path.display()),
            e.to_string(),
        )
    })
}

pub(super) fn postgres_user() -> Result<RunAs> {
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

pub(super) fn parse_passwd(passwd: &str, name: &str) -> Option<RunAs> {
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
pub(super) struct ChildEnv<'a> {
    pub(super) dir: &'a Path,
    pub(super) run_as: Option<RunAs>,
}

impl ChildEnv<'_> {
    /// Extra advice for errors of `initdb`/`postgres` when they run as `postgres`.
    pub(super) fn hint(&self) -> String {
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

    pub(super) fn command(&self, program: &Path) -> Command {
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

pub(super) fn run_initdb(bindir: &Path, data_dir: &Path, env: &ChildEnv<'_>) -> Result<()> {
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

/// Waits until line 8 of `postmaster.pid` says "ready" (a primary) or "standby" (a
/// hot standby accepting read-only connections).
pub(super) fn wait_ready(
    postmaster: &mut Child,
    data_dir: &Path,
    log_path: &Path,
    command_line: &str,
) -> Result<()> {
    let pid_file = data_dir.join("postmaster.pid");
    let deadline = Instant::now() + READY_TIMEOUT;
    loop {
        if let Ok(text) = fs::read_to_string(&pid_file) {
            if matches!(
                text.lines().nth(7).map(str::trim),
                Some("ready" | "standby")
            ) {
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

pub(super) fn log_tail(path: &Path) -> String {
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
pub(super) fn wait_exit(child: &mut Child, timeout: Duration) -> bool {
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
pub(super) fn stop_postmaster(postmaster: &mut Child) {
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
pub(super) fn spawn_watchdog(dir: PathBuf) -> Result<Cluster> {
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
