//! Hostile identifiers and values never change the statement: names are
//! quoted, values are bound, and what cannot be represented is refused
//! before anything is sent.

use pgpatterns::sea_query::{Expr, Func, Order, Query};
use pgpatterns::{
    BlockingExecutor, BuiltQuery, Column, Error, Executor, Ident, SqlType, Table, MAX_IDENT_BYTES,
};

use crate::support::{
    client, count_rows, create, create_table, exec, fetch, insert, pool, schema, with_sync_client,
};

/// Text that breaks naive SQL building: quotes, statement and comment
/// delimiters, placeholders, escapes, unicode, upper case, spaces, SQL
/// keywords and a name of PostgreSQL's full 63 bytes.
const HOSTILE: &[&str] = &[
    "it's",
    "say \"hi\"",
    "semi; colon",
    "-- dash dash",
    "$1",
    "$$ dollar $$",
    "?",
    "back\\slash",
    "E'\\x27'",
    "/* open comment",
    "Ünïcødé ☃ 🚀",
    "UPPER Case",
    "  spaced  out  ",
    "x' OR '1'='1",
    "Robert'); DROP TABLE students;--",
    "\"; DROP TABLE victims; --",
    "select",
    "user",
    "ORDER BY",
    "sixty-three bytes: 'q' \"dq\" $$ \\ ; -- éxxxxxxxxxxxxxxxxxxxxxxx",
];

/// A table `victims` with one row: every hostile statement above aims at it.
async fn victims<E: Executor>(e: &E) -> Table {
    let victims = Table::new("victims").expect("valid name");
    let id = victims.column::<i32>("id").expect("valid name");
    create(e, &victims, &[id.erase()]).await;
    exec(e, &insert(&victims, &[id.erase()], [vec![1.param()]])).await;
    victims
}

/// `name` quoted by the server's own `quote_ident`, for DDL sea-query has no
/// statement for (`CREATE SCHEMA`).
async fn server_quoted<E: Executor>(e: &E, name: &str) -> String {
    let q = BuiltQuery::from(
        &Query::select()
            .expr(Func::cust("quote_ident").arg(name.to_owned().param()))
            .to_owned(),
    );
    fetch::<(String,), _>(e, &q).await.remove(0).0
}

/// `(table_name, column_name)` of every column in schema `space`, sorted.
async fn catalog_columns<E: Executor>(e: &E, space: &str) -> Vec<(String, String)> {
    let columns = Table::in_schema("information_schema", "columns").expect("valid name");
    let col = |name| columns.column::<String>(name).expect("valid name");
    let (in_schema, table, column) = (col("table_schema"), col("table_name"), col("column_name"));
    let q = BuiltQuery::from(
        &Query::select()
            .column(table.col_ref())
            .column(column.col_ref())
            .from(columns.table_ref())
            .and_where(in_schema.eq(space))
            .to_owned(),
    );
    let mut got = fetch::<(String, String), _>(e, &q).await;
    got.sort();
    got
}

/// Runs `sql` (a `DROP`) when the test ends, pass or fail, from its own
/// thread: the sync client must not run on a runtime thread.
struct DropOnExit {
    config: postgres::Config,
    sql: String,
}

impl Drop for DropOnExit {
    fn drop(&mut self) {
        let (config, sql) = (self.config.clone(), self.sql.clone());
        let dropped = std::thread::spawn(move || {
            config
                .connect(postgres::NoTls)
                .and_then(|mut c| c.batch_execute(&sql))
        })
        .join();
        if !matches!(dropped, Ok(Ok(()))) {
            eprintln!("could not run `{}`: {dropped:?}", self.sql);
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_identifiers_name_exactly_their_objects() {
    let schema = schema().await;
    let client = client(&schema).await;
    let victims = victims(&client).await;

    // A schema of its own, with a hostile name too.
    let space = format!("{} \"; DROP TABLE victims; -- 'Ü'", schema.name());
    let quoted_space = server_quoted(&client, &space).await;
    client
        .run_script(&format!("CREATE SCHEMA {quoted_space}"))
        .await
        .expect("create the hostile schema");
    let _drop_space = DropOnExit {
        config: postgres::Config::from(schema.config()),
        sql: format!("DROP SCHEMA {quoted_space} CASCADE"),
    };

    let mut expected = Vec::new();
    for (i, &name) in HOSTILE.iter().enumerate() {
        let i = i32::try_from(i).expect("few names");
        let table = Table::in_schema(&space, name).expect("valid name");
        let id = table.column::<i32>("id").expect("valid name");
        let col = table.column::<String>(name).expect("valid name");
        let columns = [id.erase(), col.erase()];
        create(&client, &table, &columns).await;
        let rows = [vec![i.param(), name.to_owned().param()]];
        assert_eq!(exec(&client, &insert(&table, &columns, rows)).await, 1);

        // Read back through the table, then through a hostile alias of it.
        for handle in [table.clone(), table.aliased(name).expect("valid alias")] {
            let (id, col) = (id.of(&handle), col.of(&handle));
            let q = BuiltQuery::from(
                &Query::select()
                    .column(id.col_ref())
                    .column(col.col_ref())
                    .from(handle.table_ref())
                    .and_where(col.eq(name))
                    .to_owned(),
            );
            assert_eq!(
                fetch::<(i32, String), _>(&client, &q).await,
                [(i, name.to_owned())],
                "{q}"
            );
        }
        expected.push((name.to_owned(), "id".to_owned()));
        expected.push((name.to_owned(), name.to_owned()));
    }
    expected.sort();

    // The catalog holds exactly these names: none truncated, case-folded or split.
    assert_eq!(catalog_columns(&client, &space).await, expected);
    assert_eq!(count_rows(&client, &victims).await, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_values_are_stored_and_matched_verbatim() {
    let schema = schema().await;
    let client = client(&schema).await;
    let victims = victims(&client).await;

    let notes = Table::new("notes").expect("valid name");
    let id = notes.column::<i32>("id").expect("valid name");
    let body = notes.column::<String>("body").expect("valid name");
    let columns = [id.erase(), body.erase()];
    create(&client, &notes, &columns).await;

    let long_emoji = "🚀".repeat(1000);
    let values: Vec<(i32, String)> = HOSTILE
        .iter()
        .copied()
        .chain([
            "'; DELETE FROM notes; --",
            "line\nbreak\ttab\rreturn",
            "\\'",
            "%_ like wildcards",
            "NULL",
            "",
            "\u{feff}bom \u{202e}rtl",
            &long_emoji,
        ])
        .zip(1..)
        .map(|(text, i)| (i, text.to_owned()))
        .collect();
    let rows = values
        .iter()
        .map(|(i, text)| vec![i.param(), text.clone().param()]);
    let n = u64::try_from(values.len()).expect("few values");
    assert_eq!(exec(&client, &insert(&notes, &columns, rows)).await, n);

    let select = |cond: Expr| {
        BuiltQuery::from(
            &Query::select()
                .column(id.col_ref())
                .column(body.col_ref())
                .from(notes.table_ref())
                .and_where(cond)
                .order_by(id.col_ref(), Order::Asc)
                .to_owned(),
        )
    };
    let all = select(Expr::cust("TRUE"));
    assert_eq!(fetch::<(i32, String), _>(&client, &all).await, values);
    for (i, text) in &values {
        let expected = [(*i, text.clone())];
        let by_eq = select(body.eq(text.as_str()));
        assert_eq!(
            fetch::<(i32, String), _>(&client, &by_eq).await,
            expected,
            "{by_eq}"
        );
        let by_in = select(body.is_in([text.as_str()]));
        assert_eq!(
            fetch::<(i32, String), _>(&client, &by_in).await,
            expected,
            "{by_in}"
        );
    }
    assert_eq!(count_rows(&client, &victims).await, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn always_true_injection_matches_nothing() {
    let schema = schema().await;
    let pool = pool(&schema);

    let users = Table::new("users").expect("valid name");
    let name = users.column::<String>("name").expect("valid name");
    create(&pool, &users, &[name.erase()]).await;
    let rows = ["alice", "bob"].map(|n| vec![n.to_owned().param()]);
    exec(&pool, &insert(&users, &[name.erase()], rows)).await;

    let attacks = ["x' OR '1'='1", "' OR 1=1 --", "' OR ''='", "bob' --"];
    let names_where = |cond: Expr| {
        BuiltQuery::from(
            &Query::select()
                .column(name.col_ref())
                .from(users.table_ref())
                .and_where(cond)
                .order_by(name.col_ref(), Order::Asc)
                .to_owned(),
        )
    };
    for attack in attacks {
        let q = names_where(name.eq(attack));
        assert!(fetch::<(String,), _>(&pool, &q).await.is_empty(), "{q}");
        // `<>` is still an ordinary comparison: every real row differs.
        let q = names_where(name.ne(attack));
        let everyone = [("alice".to_owned(),), ("bob".to_owned(),)];
        assert_eq!(fetch::<(String,), _>(&pool, &q).await, everyone, "{q}");

        let update = BuiltQuery::from(
            &Query::update()
                .table(users.table_name())
                .value(name.iden(), "pwned".to_owned().param())
                .and_where(name.eq(attack))
                .to_owned(),
        );
        assert_eq!(exec(&pool, &update).await, 0, "{update}");
        let delete = BuiltQuery::from(
            &Query::delete()
                .from_table(users.table_name())
                .and_where(name.eq(attack))
                .to_owned(),
        );
        assert_eq!(exec(&pool, &delete).await, 0, "{delete}");
    }
    let q = names_where(name.is_in(attacks));
    assert!(fetch::<(String,), _>(&pool, &q).await.is_empty(), "{q}");
    assert_eq!(count_rows(&pool, &users).await, 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bobby_tables_is_stored_verbatim() {
    const BOBBY: &str = "Robert'); DROP TABLE students;--";
    let schema = schema().await;
    with_sync_client(&schema, |client| {
        let students = Table::new("students").expect("valid name");
        let name = students.column::<String>("name").expect("valid name");
        let create = BuiltQuery::schema(&create_table(&students, &[name.erase()]));
        create.execute_blocking(client).expect("create students");
        let add = insert(&students, &[name.erase()], [vec![BOBBY.to_owned().param()]]);
        assert_eq!(add.execute_blocking(client).expect("insert Bobby"), 1);

        let q = BuiltQuery::from(
            &Query::select()
                .column(name.col_ref())
                .from(students.table_ref())
                .and_where(name.eq(BOBBY))
                .to_owned(),
        );
        // The table still exists, and holds the name exactly as given.
        let got = q
            .fetch_all_blocking::<(String,)>(client)
            .expect("select Bobby");
        assert_eq!(got, [(BOBBY.to_owned(),)]);
    })
    .await;
}

/// `INSERT INTO nul_check (body) VALUES ('ok'), ('a\0b')` and a filter with
/// a NUL inside an array parameter: both must be refused before sending.
fn nul_statements(table: &Table, body: &Column<String>) -> [BuiltQuery; 2] {
    let rows = ["ok", "a\0b"].map(|s| vec![s.to_owned().param()]);
    let filter = BuiltQuery::from(
        &Query::select()
            .column(body.col_ref())
            .from(table.table_ref())
            .and_where(body.is_in(["fine", "nul\0inside"]))
            .to_owned(),
    );
    [insert(table, &[body.erase()], rows), filter]
}

fn assert_nul_refused(err: &Error, param: &str) {
    assert!(err.is_invalid_input(), "{err:?}");
    assert!(
        matches!(err, Error::InvalidSpec { field: "value", reason } if reason.contains(param)),
        "{err:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nul_in_a_value_is_refused_by_every_client() {
    let schema = schema().await;
    let table = Table::new("nul_check").expect("valid name");
    let body = table.column::<String>("body").expect("valid name");
    let client = client(&schema).await;
    create(&client, &table, &[body.erase()]).await;
    let [add, filter] = nul_statements(&table, &body);

    let err = add.execute(&client).await.unwrap_err();
    assert_nul_refused(&err, "$2");
    assert_nul_refused(&client.rows(&filter).await.unwrap_err(), "$1");

    let pool = pool(&schema);
    assert_nul_refused(&add.execute(&pool).await.unwrap_err(), "$2");
    assert_nul_refused(&filter.fetch_rows(&pool).await.unwrap_err(), "$1");

    let (add2, filter2) = (add.clone(), filter.clone());
    let (add_err, filter_err) = with_sync_client(&schema, move |c| {
        (
            add2.execute_blocking(c).unwrap_err(),
            c.rows(&filter2).unwrap_err(),
        )
    })
    .await;
    assert_nul_refused(&add_err, "$2");
    assert_nul_refused(&filter_err, "$1");

    // Nothing was stored, and the clients are still usable.
    assert_eq!(count_rows(&client, &table).await, 0);
    assert_eq!(count_rows(&pool, &table).await, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn identifiers_are_checked_and_63_bytes_work_end_to_end() {
    fn assert_refused<T: std::fmt::Debug>(made: pgpatterns::Result<T>, name: &str, why: &str) {
        let err = made.expect_err(name);
        assert!(err.is_invalid_input(), "{err:?}");
        assert!(
            matches!(&err, Error::InvalidIdentifier { ident, reason } if ident == name && reason.contains(why)),
            "{err:?}"
        );
    }
    let ok = Table::new("t").expect("valid name");

    // NUL, wherever a name goes.
    let nul = "a\0b";
    assert_refused(Ident::new(nul), nul, "NUL");
    assert_refused(Table::new(nul), nul, "NUL");
    assert_refused(Table::in_schema(nul, "t"), nul, "NUL");
    assert_refused(Table::in_schema("s", nul), nul, "NUL");
    assert_refused(ok.column::<i64>(nul), nul, "NUL");
    assert_refused(ok.aliased(nul), nul, "NUL");

    // 64 bytes (32 two-byte characters) is over the limit the server would truncate at.
    let long = "é".repeat(32);
    assert_eq!(long.len(), MAX_IDENT_BYTES + 1);
    assert_refused(Table::new(&long), &long, "63 bytes");
    assert_refused(Table::in_schema(&long, "t"), &long, "63 bytes");
    assert_refused(ok.column::<i64>(&long), &long, "63 bytes");
    assert_refused(ok.aliased(&long), &long, "63 bytes");

    // Exactly 63 bytes: created, queried and stored untruncated.
    let schema = schema().await;
    let client = client(&schema).await;
    let table_name = format!("{}t", "é".repeat(31));
    let column_name = format!("{}!", "Ω".repeat(31));
    assert_eq!((table_name.len(), column_name.len()), (63, 63));
    let table = Table::in_schema(schema.name(), &table_name).expect("63 bytes is allowed");
    let col = table
        .column::<String>(&column_name)
        .expect("63 bytes is allowed");
    create(&client, &table, &[col.erase()]).await;
    let rows = [vec![column_name.clone().param()]];
    assert_eq!(
        exec(&client, &insert(&table, &[col.erase()], rows)).await,
        1
    );
    let q = BuiltQuery::from(
        &Query::select()
            .column(col.col_ref())
            .from(table.table_ref())
            .and_where(col.eq(column_name.as_str()))
            .to_owned(),
    );
    assert_eq!(
        fetch::<(String,), _>(&client, &q).await,
        [(column_name.clone(),)]
    );
    assert_eq!(
        catalog_columns(&client, schema.name()).await,
        [(table_name, column_name)]
    );
}
