//! Server tests for `pgpatterns::testdb`: start-up, schema isolation, and that the
//! private cluster is removed on drop and when the process exits or is killed.
//!
//! These tests never skip: without PostgreSQL binaries (or `DATABASE_URL`) they fail
//! with the error that says how to get a database.
#![cfg(feature = "testdb")]

use std::io::{BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use pgpatterns::testdb::TestDb;

/// Set in the re-run child process: `exit` or `kill`.
const CHILD_ENV: &str = "PGPATTERNS_TESTDB_CHILD";

fn must<T>(what: &str, r: pgpatterns::Result<T>) -> T {
    r.unwrap_or_else(|e| panic!("{what}: {e}"))
}

/// `true` once the process has exited. A zombie counts as exited: an orphaned server
/// is reparented to PID 1, which in some containers never reaps.
fn process_gone(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Err(_) => true,
        Ok(stat) => stat
            .rsplit_once(')')
            .is_some_and(|(_, rest)| rest.trim_start().starts_with('Z')),
    }
}

/// Polls `done` until it is true or the timeout passes; returns the time it took.
fn wait_until(timeout: Duration, mut done: impl FnMut() -> bool) -> Option<Duration> {
    let start = Instant::now();
    loop {
        if done() {
            return Some(start.elapsed());
        }
        if start.elapsed() > timeout {
            return None;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The targets of a process's open file descriptors (e.g. `pipe:[1234]`).
fn fd_targets(pid: &str) -> Vec<String> {
    let Ok(entries) = std::fs::read_dir(format!("/proc/{pid}/fd")) else {
        return Vec::new();
    };
    entries
        .filter_map(|e| e.ok())
        .filter_map(|e| std::fs::read_link(e.path()).ok())
        .map(|target| target.to_string_lossy().into_owned())
        .collect()
}

/// The pid of the watchdog shell of the cluster in `dir` (its last argument is `dir`).
fn find_watchdog(dir: &Path) -> Option<String> {
    let dir = dir.to_string_lossy();
    std::fs::read_dir("/proc")
        .ok()?
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|pid| pid.bytes().all(|b| b.is_ascii_digit()))
        .find(|pid| {
            let Ok(cmdline) = std::fs::read(format!("/proc/{pid}/cmdline")) else {
                return false;
            };
            let args: Vec<&[u8]> = cmdline
                .split(|&b| b == 0)
                .filter(|a| !a.is_empty())
                .collect();
            args.first() == Some(&b"/bin/sh".as_slice()) && args.last() == Some(&dir.as_bytes())
        })
}

#[tokio::test]
async fn start_cluster_and_select_1() {
    let db = must("start_cluster", TestDb::start_cluster());
    println!(
        "testdb start-up took {:?} ({})",
        db.startup_time(),
        db.connection_string()
    );
    assert!(db.is_throwaway());
    assert!(db.connection_string().starts_with("host=/"));
    assert!(db
        .connection_string()
        .ends_with("user=postgres dbname=postgres"));
    let data_dir = db.data_dir().expect("data dir").to_path_buf();
    assert!(data_dir.join("PG_VERSION").is_file());
    let pid = db.server_pid().expect("server pid");
    assert!(!process_gone(pid));
    assert!(db.startup_time() > Duration::ZERO);

    let client = must("connect", db.connect().await);
    let row = client.query_one("SELECT 1", &[]).await.expect("SELECT 1");
    assert_eq!(row.get::<_, i32>(0), 1);
    let listen: String = client
        .query_one("SHOW listen_addresses", &[])
        .await
        .expect("SHOW")
        .get(0);
    assert_eq!(listen, "", "the server must not listen on the network");

    // The write end of the watchdog's stdin pipe must be held by this process only
    // (not by the server), or the watchdog would never see EOF.
    let dir = data_dir.parent().expect("temp dir");
    let watchdog = find_watchdog(dir).expect("a watchdog process for the cluster");
    let pipe = std::fs::read_link(format!("/proc/{watchdog}/fd/0"))
        .expect("watchdog stdin")
        .to_string_lossy()
        .into_owned();
    assert!(pipe.starts_with("pipe:"), "{pipe}");
    assert!(fd_targets("self").contains(&pipe), "we hold {pipe}");
    assert!(
        !fd_targets(&pid.to_string()).contains(&pipe),
        "the server inherited the watchdog pipe {pipe}"
    );
}

#[tokio::test]
async fn schemas_are_isolated_and_dropped() {
    let db = must("shared", TestDb::shared());
    let s1 = must("schema 1", db.schema().await);
    let s2 = must("schema 2", db.schema().await);
    assert_ne!(s1.name(), s2.name());

    let c1 = must("connect 1", s1.connect().await);
    let c2 = must("connect 2", s2.connect().await);
    for (client, schema, value) in [(&c1, &s1, "one"), (&c2, &s2, "two")] {
        let current: String = client
            .query_one("SELECT current_schema()", &[])
            .await
            .expect("current_schema")
            .get(0);
        assert_eq!(current, schema.name());
        client
            .batch_execute(&format!(
                "CREATE TABLE items (id int, v text); INSERT INTO items VALUES (1, '{value}')"
            ))
            .await
            .expect("create table");
    }
    c2.execute("INSERT INTO items VALUES (2, 'two')", &[])
        .await
        .expect("insert");
    let rows1: Vec<String> = c1
        .query("SELECT v FROM items ORDER BY id", &[])
        .await
        .expect("select 1")
        .iter()
        .map(|r| r.get(0))
        .collect();
    let rows2: Vec<String> = c2
        .query("SELECT v FROM items ORDER BY id", &[])
        .await
        .expect("select 2")
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(rows1, ["one"]);
    assert_eq!(rows2, ["two", "two"]);

    let other = must("connect", db.connect().await);
    let exists = |name: String| {
        let other = &other;
        async move {
            let n: i64 = other
                .query_one(
                    "SELECT count(*) FROM pg_namespace WHERE nspname = $1",
                    &[&name],
                )
                .await
                .expect("pg_namespace")
                .get(0);
            n == 1
        }
    };
    let (n1, n2) = (s1.name().to_owned(), s2.name().to_owned());
    assert!(exists(n1.clone()).await);
    drop(s1); // with its connection still open (idle)
    assert!(!exists(n1).await, "dropped schema still exists");
    assert!(exists(n2.clone()).await, "the other schema must survive");
    drop(c2);
    drop(s2);
    assert!(!exists(n2).await);
}

#[test]
fn drop_removes_server_and_dir() {
    let db = must("start_cluster", TestDb::start_cluster());
    let data_dir = db.data_dir().expect("data dir").to_path_buf();
    let dir = data_dir.parent().expect("temp dir").to_path_buf();
    let pid = db.server_pid().expect("pid");
    assert!(dir.is_dir() && !process_gone(pid));

    let start = Instant::now();
    drop(db);
    let took = start.elapsed();
    println!("dropping the TestDb took {took:?}");
    let gone = wait_until(Duration::from_secs(5), || {
        process_gone(pid) && !dir.exists()
    });
    assert!(
        gone.is_some(),
        "after drop: server {pid} gone = {}, {} exists = {}",
        process_gone(pid),
        dir.display(),
        dir.exists()
    );
    // The server was our child and Drop reaps it: not even a zombie is left.
    assert!(!Path::new(&format!("/proc/{pid}")).exists());
}

/// Child side: start the shared cluster (and, for `standby-kill`, its standby),
/// report it (the standby), then exit or wait to be killed.
fn child(mode: &str) {
    let db = must("shared", TestDb::shared());
    let (dir, pid) = if mode == "standby-kill" {
        let standby = must("standby", db.standby());
        let data_dir = standby.data_dir().expect("a private standby");
        let dir = data_dir.parent().expect("temp dir").to_path_buf();
        (dir, standby.server_pid().expect("standby pid"))
    } else {
        let dir = db
            .data_dir()
            .and_then(Path::parent)
            .expect("a private cluster");
        (dir.to_path_buf(), db.server_pid().expect("pid"))
    };
    let mut out = std::io::stdout();
    writeln!(out, "\nCHILD dir={} pid={pid}", dir.display()).expect("write");
    out.flush().expect("flush");
    if mode.ends_with("kill") {
        std::thread::sleep(Duration::from_secs(60));
        panic!("the parent should have killed this process");
    }
}

/// Parent side: re-run this test binary as a child that holds `TestDb::shared()`, let
/// it exit (or kill it with SIGKILL), and check that the cluster is cleaned up.
fn parent(test_name: &str, mode: &str) {
    let exe = std::env::current_exe().expect("current_exe");
    let mut child = Command::new(exe)
        .args(["--exact", test_name, "--nocapture", "--test-threads=1"])
        .env(CHILD_ENV, mode)
        // The child must start a private cluster even if DATABASE_URL is set here.
        .env_remove("DATABASE_URL")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("spawn child test process");
    let mut stdout = BufReader::new(child.stdout.take().expect("child stdout"));
    let mut seen = String::new();
    let mut reported = None;
    let mut line = String::new();
    while stdout.read_line(&mut line).expect("read child stdout") > 0 {
        seen.push_str(&line);
        // The test harness prints "test <name> ... " before it, on the same line.
        if let Some((_, rest)) = line.trim_end().split_once("CHILD dir=") {
            let (dir, pid) = rest.rsplit_once(" pid=").expect("CHILD line format");
            reported = Some((PathBuf::from(dir), pid.parse::<u32>().expect("pid")));
            break;
        }
        line.clear();
    }
    let Some((dir, pid)) = reported else {
        let status = child.wait().expect("wait child");
        panic!("the child did not report a cluster ({status}); its output:\n{seen}");
    };
    println!("[{mode}] child cluster: dir={} pid={pid}", dir.display());
    assert!(
        dir.is_dir(),
        "{} must exist while the child runs",
        dir.display()
    );
    assert!(
        !process_gone(pid),
        "server {pid} must run while the child runs"
    );

    let status = match mode {
        "kill" | "standby-kill" => {
            child.kill().expect("SIGKILL the child");
            child.wait().expect("wait child")
        }
        _ => {
            let status = child.wait().expect("wait child");
            assert!(status.success(), "child failed: {status}");
            status
        }
    };
    let mut rest = String::new();
    let _ = stdout.read_to_string(&mut rest);
    println!("[{mode}] child ended: {status}");

    let took = wait_until(Duration::from_secs(10), || {
        process_gone(pid) && !dir.exists()
    });
    match took {
        Some(t) => println!("[{mode}] server and dir gone {t:?} after the child ended"),
        None => panic!(
            "[{mode}] 10 s after the child ended: server {pid} gone = {}, {} exists = {}",
            process_gone(pid),
            dir.display(),
            dir.exists()
        ),
    }
}

fn exit_cleanup_test(test_name: &str, mode: &str) {
    match std::env::var(CHILD_ENV) {
        Ok(child_mode) => child(&child_mode),
        Err(_) => parent(test_name, mode),
    }
}

#[test]
fn shared_cleanup_on_process_exit() {
    exit_cleanup_test("shared_cleanup_on_process_exit", "exit");
}

#[test]
fn shared_cleanup_on_sigkill() {
    exit_cleanup_test("shared_cleanup_on_sigkill", "kill");
}

#[test]
fn standby_cleanup_on_sigkill() {
    exit_cleanup_test("standby_cleanup_on_sigkill", "standby-kill");
}

#[test]
fn standby_is_removed_with_its_database() {
    let db = must("start_cluster", TestDb::start_cluster());
    let standby = must("standby", db.standby());
    let dir = standby
        .data_dir()
        .and_then(Path::parent)
        .expect("a private standby")
        .to_path_buf();
    let pid = standby.server_pid().expect("standby pid");
    assert!(dir.is_dir() && !process_gone(pid));
    // Stopped and started again: a new server process, found at cleanup.
    must("stop", standby.stop());
    assert!(process_gone(pid));
    must("start", standby.start());
    let pid = standby.server_pid().expect("standby pid");
    assert!(!process_gone(pid));

    drop(db);
    let gone = wait_until(Duration::from_secs(5), || {
        process_gone(pid) && !dir.exists()
    });
    assert!(
        gone.is_some(),
        "after drop: standby {pid} gone = {}, {} exists = {}",
        process_gone(pid),
        dir.display(),
        dir.exists()
    );
}
