//! Errors carry what is needed to act on them: the SQLSTATE and SQL of a
//! server error, the column of a decode error, the row count; and invalid
//! input is refused before anything reaches the server.

use std::time::Duration;

use pgpatterns::sea_query::{ExprTrait, Query};
use pgpatterns::{
    BlockingExecutor, BuiltQuery, Error, Executor, Ident, RowRead, SqlType, SqlxConn, Table,
    Transactional,
};

use crate::support::{
    client, count_rows, create, exec, insert, pool, schema, sqlx_conn, sqlx_pool, with_sync_client,
    Ledger,
};

/// Checks a server error from tokio-postgres (or deadpool, or postgres):
/// as [`assert_server_error`], and the client's own error is kept.
fn assert_db_error(err: &Error, code: &str, sql: &str) {
    assert_server_error(err, code, sql);
    let client = err
        .client_error()
        .and_then(|s| s.downcast_ref::<tokio_postgres::Error>())
        .expect("the client's error is kept");
    assert_eq!(client.code().map(|c| c.code()), Some(code));
    let db = err.as_db_error().expect("the server's error");
    assert_eq!(db.code().code(), code);
    assert!(err.message().unwrap().starts_with(db.message()), "{err}");
    assert_says_once(err, db.message());
}

/// Checks a server error from sqlx: as [`assert_server_error`], and the
/// `sqlx::Error` is kept.
fn assert_sqlx_error(err: &Error, code: &str, sql: &str) {
    assert_server_error(err, code, sql);
    let client = err
        .client_error()
        .and_then(|s| s.downcast_ref::<sqlx::Error>())
        .expect("the client's error is kept");
    let sqlx::Error::Database(db) = client else {
        panic!("a server error, got {client:?}");
    };
    assert_eq!(db.code().as_deref(), Some(code));
    assert!(err.message().unwrap().starts_with(db.message()), "{err}");
    assert_says_once(err, db.message());
    // tokio-postgres's `DbError` is for its own clients' errors.
    assert!(err.as_db_error().is_none());
}

/// Checks a server error from any client: variant, SQLSTATE, SQL and
/// `Display`.
fn assert_server_error(err: &Error, code: &str, sql: &str) {
    assert!(err.is_database() && !err.is_invalid_input(), "{err:?}");
    assert!(matches!(err, Error::Database { .. }), "{err:?}");
    assert_eq!(err.code(), Some(code), "{err}");
    assert_eq!(err.sql(), Some(sql), "{err}");
    let shown = err.to_string();
    assert!(
        shown.starts_with(&format!("database error {code}: ")),
        "{shown}"
    );
    assert!(shown.ends_with(&format!(" (in SQL: {sql})")), "{shown}");
}

/// `{err}` and each `source()` below it, as `anyhow`/`eyre` print a chain.
fn chain(err: &Error) -> String {
    let mut out = err.to_string();
    let mut next = std::error::Error::source(err);
    while let Some(cause) = next {
        out.push_str("\ncaused by: ");
        out.push_str(&cause.to_string());
        next = cause.source();
    }
    out
}

/// The whole chain says `text` exactly once.
fn assert_says_once(err: &Error, text: &str) {
    let all = chain(err);
    assert_eq!(all.matches(text).count(), 1, "{text:?} in:\n{all}");
}

/// `SELECT … FROM "no_such_table" WHERE … = $1`.
fn missing_table() -> BuiltQuery {
    let table = Table::new("no_such_table").expect("valid name");
    let id = table.column::<i64>("id").expect("valid name");
    BuiltQuery::from(
        &Query::select()
            .column(id.col_ref())
            .from(table.table_ref())
            .and_where(id.eq(1))
            .to_owned(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn missing_table_is_42p01_with_the_sql_from_every_client() {
    let schema = schema().await;
    let q = missing_table();
    let client = client(&schema).await;
    let err = client.rows(&q).await.unwrap_err();
    assert_db_error(&err, "42P01", q.sql());
    assert!(err.to_string().contains("no_such_table"), "{err}");

    assert_db_error(
        &q.fetch_rows(&pool(&schema)).await.unwrap_err(),
        "42P01",
        q.sql(),
    );

    let q2 = q.clone();
    let err = with_sync_client(&schema, move |c| c.rows(&q2).unwrap_err()).await;
    assert_db_error(&err, "42P01", q.sql());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn division_by_zero_is_22012() {
    let schema = schema().await;
    let q = BuiltQuery::from(
        &Query::select()
            .expr(1i32.param().div(0i32.param()))
            .to_owned(),
    );
    let err = (client(&schema).await).rows(&q).await.unwrap_err();
    assert_db_error(&err, "22012", q.sql());
    assert!(err.to_string().contains("division by zero"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unique_violation_is_recognised_with_its_detail() {
    let schema = schema().await;
    let client = client(&schema).await;
    let pool = pool(&schema);
    let ledger = Ledger::new("ledger");
    exec(&client, &ledger.create()).await;
    exec(&client, &ledger.insert(&[(1, 10)])).await;

    let again = ledger.insert(&[(1, 20)]);
    for err in [
        again.execute(&client).await.unwrap_err(),
        again.execute(&pool).await.unwrap_err(),
    ] {
        assert!(err.is_unique_violation(), "{err:?}");
        assert_db_error(&err, "23505", again.sql());
        // The server's DETAIL names the key.
        assert!(
            err.to_string().contains("Key (id)=(1) already exists"),
            "{err}"
        );
    }
    assert_eq!(ledger.rows(&pool).await, [(1, 10)]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn decode_errors_name_the_column_and_the_type() {
    let schema = schema().await;
    let client = client(&schema).await;
    decode_errors_on(&client).await;
    // The client's error is the source, down to postgres-types' own.
    let select = BuiltQuery::fixed("SELECT 1::int8");
    let err = client.rows_as::<(i32,)>(&select).await.unwrap_err();
    let source = std::error::Error::source(&err).expect("a source");
    assert!(source.downcast_ref::<tokio_postgres::Error>().is_some());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlx_decode_errors_read_as_tokio_postgres_ones() {
    let schema = schema().await;
    decode_errors_on(&sqlx_pool(&schema)).await;
    let mut conn = sqlx_conn(&schema).await;
    let select = BuiltQuery::fixed("SELECT 1::int8");
    let err = SqlxConn::new(&mut conn)
        .rows_as::<(i32,)>(&select)
        .await
        .unwrap_err();
    // Read with postgres-types, whose error is the source.
    let source = std::error::Error::source(&err).expect("a source");
    assert!(
        source
            .downcast_ref::<tokio_postgres::types::WrongType>()
            .is_some(),
        "{source:?}"
    );
}

/// Decode errors through `client` (of any kind) name the column and the
/// type and end with the cause in plain words.
async fn decode_errors_on<E: Executor>(client: &E) {
    let table = Table::new("payments").expect("valid name");
    let amount = table.column::<i64>("amount").expect("valid name");
    let note = table.column::<String>("note").expect("valid name");
    let columns = [amount.erase(), note.erase()];
    create(&client, &table, &columns).await;
    let row = vec![5i64.param(), String::param_opt(None)];
    exec(&client, &insert(&table, &columns, [row])).await;
    let select = BuiltQuery::from(
        &Query::select()
            .column(amount.col_ref())
            .column(note.col_ref())
            .from(table.table_ref())
            .to_owned(),
    );

    let assert_decode = |err: Error, column: &str, expected: &str, cause: &str| {
        let shown = err.to_string();
        match &err {
            Error::Decode {
                column: c,
                expected: e,
                ..
            } => {
                assert!(c.contains(column), "{err:?}");
                assert!(e.contains(expected), "{err:?}");
            }
            other => panic!("expected a decode error, got {other:?}"),
        }
        assert!(
            shown.contains(column) && shown.contains(expected),
            "{shown}"
        );
        // The root cause is on the first line, in plain words.
        assert!(shown.ends_with(cause), "{shown}");
        assert!(std::error::Error::source(&err).is_some(), "{err:?}");
    };
    // An int8 read as a String, and as an i32.
    let err = client.rows_as::<(String, Option<String>)>(&select).await;
    assert_decode(
        err.unwrap_err(),
        "amount",
        "String",
        "the column's Postgres type is `int8`",
    );
    let err = client
        .rows_as::<(i32, Option<String>)>(&select)
        .await
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        "cannot decode column \"amount\" (#0) as i32: the column's Postgres type is `int8`"
    );
    // The source chain goes down to postgres-types' own error.
    assert!(
        chain(&err).contains("cannot convert between the Rust type `i32`"),
        "{}",
        chain(&err)
    );
    // A NULL read as a non-optional String.
    let err = client.rows_as::<(i64, String)>(&select).await;
    assert_decode(
        err.unwrap_err(),
        "note",
        "String",
        "the value is NULL; decode into an `Option` to accept NULL",
    );
    // A column past the end, and a column name that is not there.
    let err = client.rows_as::<(i64, Option<String>, i64)>(&select).await;
    assert_decode(
        err.unwrap_err(),
        "#2",
        "i64",
        "the row has 2 columns: \"amount\", \"note\"",
    );
    let rows = client.rows(&select).await.expect("select");
    assert_decode(
        RowRead::try_get::<i64>(&rows[0], "missing".into()).unwrap_err(),
        "missing",
        "i64",
        "the row has no column of that name; it has 2 columns: \"amount\", \"note\"",
    );
    // The right types decode.
    let good = client.rows_as::<(i64, Option<String>)>(&select).await;
    assert_eq!(good.expect("decode"), [(5, None)]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn query_one_and_query_opt_check_the_row_count() {
    let schema = schema().await;
    let client = client(&schema).await;
    let ledger = Ledger::new("ledger");
    exec(&client, &ledger.create()).await;
    exec(&client, &ledger.insert(&[(1, 10), (2, 20), (3, 30)])).await;
    let none = ledger.select_where(ledger.id.eq(0));
    let one = ledger.select_where(ledger.id.eq(2));
    let many = ledger.select();

    let count = |r: pgpatterns::Result<()>| match r {
        Err(Error::RowCount { got, .. }) => got,
        other => panic!("expected a row-count error, got {other:?}"),
    };
    assert_eq!(count(client.one_row(&none).await.map(drop)), 0);
    assert_eq!(count(client.one_row(&many).await.map(drop)), 2);
    assert_eq!(count(client.optional_row(&many).await.map(drop)), 2);
    let opt_err = client.optional_row(&many).await.map(drop).unwrap_err();
    assert_eq!(
        opt_err.to_string(),
        "expected at most one row, got more than one"
    );
    let row = client.one_row(&one).await.expect("one row");
    assert_eq!(
        RowRead::try_get::<i64>(&row, "amount".into()).expect("amount"),
        20
    );
    let err = client.one_row(&none).await.unwrap_err();
    assert_eq!(err.to_string(), "expected exactly one row, got none");

    let got = with_sync_client(&schema, move |c| {
        (
            count(c.one_row(&none).map(drop)),
            count(c.one_row(&many).map(drop)),
            count(c.optional_row(&many).map(drop)),
        )
    })
    .await;
    assert_eq!(got, (0, 2, 2));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_input_never_reaches_the_server() {
    // Empty names are refused when the handle is made: no SQL can be built.
    for err in [
        Ident::new("").map(drop).unwrap_err(),
        Table::new("").map(drop).unwrap_err(),
        Table::in_schema("", "t").map(drop).unwrap_err(),
        Table::new("t")
            .and_then(|t| t.column::<i64>(""))
            .map(drop)
            .unwrap_err(),
    ] {
        assert!(err.is_invalid_input(), "{err:?}");
        assert!(
            matches!(&err, Error::InvalidIdentifier { ident, reason } if ident.is_empty() && reason.contains("empty")),
            "{err:?}"
        );
    }

    // A value the server would reject is refused before sending. Proof: inside
    // a transaction, a statement the server rejected would abort it, and the
    // next statement would fail with 25P02.
    let schema = schema().await;
    let mut client = client(&schema).await;
    let ledger = Ledger::new("ledger");
    exec(&client, &ledger.create()).await;
    let nul = BuiltQuery::from(&Query::select().expr("a\0b".to_owned().param()).to_owned());

    let tx = client.transaction().await.expect("begin");
    exec(&tx, &ledger.insert(&[(1, 10)])).await;
    let err = tx.rows(&nul).await.unwrap_err();
    assert!(
        matches!(err, Error::InvalidSpec { field: "value", .. }),
        "{err:?}"
    );
    exec(&tx, &ledger.insert(&[(2, 20)])).await;
    tx.commit().await.expect("commit");
    assert_eq!(ledger.rows(&client).await, [(1, 10), (2, 20)]);

    // The contrast: a statement that does reach the server and fails.
    let tx = client.transaction().await.expect("begin");
    let missing = missing_table();
    assert_db_error(
        &tx.rows(&missing).await.unwrap_err(),
        "42P01",
        missing.sql(),
    );
    let next = ledger.insert(&[(3, 30)]);
    assert_db_error(&next.execute(&tx).await.unwrap_err(), "25P02", next.sql());
    drop(tx);
    assert_eq!(count_rows(&client, &ledger.table).await, 2);

    // Transactional runs check every statement too; nothing of the batch is kept.
    let batch = [ledger.insert(&[(4, 40)]), nul];
    let err = client.run_in_transaction(&batch).await.unwrap_err();
    assert!(err.is_invalid_input(), "{err:?}");
    assert_eq!(ledger.rows(&client).await, [(1, 10), (2, 20)]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unreachable_server_is_a_database_error_without_sqlstate() {
    // A port nothing listens on: bind one, then free it.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port();
    let mut config = tokio_postgres::Config::new();
    config
        .host("127.0.0.1")
        .port(port)
        .user("postgres")
        .connect_timeout(Duration::from_secs(5));
    let manager = deadpool_postgres::Manager::new(config, tokio_postgres::NoTls);
    let pool = deadpool_postgres::Pool::builder(manager)
        .build()
        .expect("build the pool");

    let q = missing_table();
    let err = q.fetch_rows(&pool).await.unwrap_err();
    assert!(err.is_database(), "{err:?}");
    assert_eq!(err.code(), None, "{err}");
    assert_eq!(err.sql(), Some(q.sql()));
    let shown = err.to_string();
    assert!(shown.starts_with("database error: "), "{shown}");
    assert!(
        shown.ends_with(&format!(" (in SQL: {})", q.sql())),
        "{shown}"
    );
    // The message goes down to the cause (the refused connection), and
    // nothing in the chain repeats it.
    assert!(shown.contains("connect"), "{shown}");
    assert!(err.as_db_error().is_none());
    assert!(err.client_error().is_some());
    assert_says_once(&err, err.message().unwrap());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlx_errors_carry_the_sqlstate_the_sql_and_the_detail() {
    let schema = schema().await;
    let pool = sqlx_pool(&schema);
    let mut conn = sqlx_conn(&schema).await;

    let q = missing_table();
    assert_sqlx_error(&q.fetch_rows(&pool).await.unwrap_err(), "42P01", q.sql());
    let err = SqlxConn::new(&mut conn).rows(&q).await.unwrap_err();
    assert_sqlx_error(&err, "42P01", q.sql());
    assert!(err.to_string().contains("no_such_table"), "{err}");

    let zero = BuiltQuery::from(
        &Query::select()
            .expr(1i32.param().div(0i32.param()))
            .to_owned(),
    );
    assert_sqlx_error(&pool.rows(&zero).await.unwrap_err(), "22012", zero.sql());

    let ledger = Ledger::new("ledger");
    exec(&pool, &ledger.create()).await;
    exec(&pool, &ledger.insert(&[(1, 10)])).await;
    let again = ledger.insert(&[(1, 20)]);
    let err = again.execute(&SqlxConn::new(&mut conn)).await.unwrap_err();
    assert!(err.is_unique_violation(), "{err:?}");
    assert_sqlx_error(&err, "23505", again.sql());
    assert!(
        err.to_string().contains("Key (id)=(1) already exists"),
        "{err}"
    );

    // Invalid input is refused before sending: a sqlx transaction goes on.
    let nul = BuiltQuery::from(&Query::select().expr("a\0b".to_owned().param()).to_owned());
    let mut tx = sqlx::Connection::begin(&mut conn).await.expect("begin");
    let in_tx = SqlxConn::new(&mut *tx);
    exec(&in_tx, &ledger.insert(&[(2, 20)])).await;
    let err = in_tx.rows(&nul).await.unwrap_err();
    assert!(
        matches!(err, Error::InvalidSpec { field: "value", .. }),
        "{err:?}"
    );
    exec(&in_tx, &ledger.insert(&[(3, 30)])).await;
    tx.commit().await.expect("commit");
    assert_eq!(ledger.rows(&pool).await, [(1, 10), (2, 20), (3, 30)]);

    // A server that cannot be reached: no SQLSTATE, what went wrong, the SQL.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port();
    let nowhere = sqlx::postgres::PgPoolOptions::new()
        .acquire_timeout(Duration::from_secs(3))
        .connect_lazy_with(
            sqlx::postgres::PgConnectOptions::new_without_pgpass()
                .host("127.0.0.1")
                .port(port)
                .username("postgres"),
        );
    let err = q.fetch_rows(&nowhere).await.unwrap_err();
    assert!(err.is_database(), "{err:?}");
    assert_eq!(err.code(), None, "{err}");
    assert_eq!(err.sql(), Some(q.sql()));
    assert!(err.to_string().starts_with("database error: "), "{err}");
    assert!(err.client_error().is_some_and(|e| e.is::<sqlx::Error>()));
    assert_says_once(&err, err.message().unwrap());
}
