//! Unit tests of the throwaway-cluster helpers (no server).

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
