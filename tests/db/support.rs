//! Helpers shared by the database tests: a schema per test, the three
//! clients, and small statement builders.

use chrono::{DateTime, Duration, Utc};
use pgpatterns::sea_query::{
    ColumnDef, Expr, ExprTrait, Index, Order, Query, Table as Ddl, TableCreateStatement,
};
use pgpatterns::seed::moves::MovesTables;
use pgpatterns::seed::orders::OrdersTables;
use pgpatterns::seed::sales::SalesTables;
use pgpatterns::testdb::{TestDb, TestSchema};
use pgpatterns::{
    AnyColumn, BuiltQuery, Column, Executor, FromRow, LatestStrategy, PageRequest, Shape,
    SinceStrategy, SqlType, Table,
};

/// A fresh schema in the shared server, dropped when the handle is.
///
/// Panics, failing the test, when no server can be had.
pub async fn schema() -> TestSchema {
    TestDb::shared()
        .expect(
            "the database tests need PostgreSQL: install its server binaries \
             (initdb, postgres) or set DATABASE_URL",
        )
        .schema()
        .await
        .expect("create the test's schema")
}

/// A `tokio_postgres::Client` whose `search_path` is the schema.
pub async fn client(schema: &TestSchema) -> tokio_postgres::Client {
    schema.connect().await.expect("connect with tokio-postgres")
}

/// A `deadpool_postgres::Pool` of up to 4 connections to the schema.
pub fn pool(schema: &TestSchema) -> deadpool_postgres::Pool {
    let manager = deadpool_postgres::Manager::new(schema.config(), tokio_postgres::NoTls);
    deadpool_postgres::Pool::builder(manager)
        .max_size(4)
        .build()
        .expect("build the deadpool pool")
}

/// sqlx connect options for the schema: the same server, user, database and
/// `search_path` as [`TestSchema::config`].
pub fn sqlx_options(schema: &TestSchema) -> sqlx::postgres::PgConnectOptions {
    use tokio_postgres::config::Host;
    let config = schema.config();
    // Text output of floats is never read (rows come back in binary), and a
    // pooler refuses startup parameters it does not know.
    let mut options =
        sqlx::postgres::PgConnectOptions::new_without_pgpass().extra_float_digits(None);
    options = match config.get_hosts().first() {
        Some(Host::Unix(dir)) => options.socket(dir),
        Some(Host::Tcp(host)) => options.host(host),
        None => options,
    };
    if let Some(&port) = config.get_ports().first() {
        options = options.port(port);
    }
    if let Some(user) = config.get_user() {
        options = options.username(user);
    }
    if let Some(password) = config.get_password() {
        options = options.password(std::str::from_utf8(password).expect("a UTF-8 password"));
    }
    if let Some(dbname) = config.get_dbname() {
        options = options.database(dbname);
    }
    // `-c name=value` server settings (`search_path`), as sqlx takes them.
    let settings: Vec<(&str, &str)> = config
        .get_options()
        .unwrap_or("")
        .split_whitespace()
        .filter(|word| *word != "-c")
        .filter_map(|word| word.split_once('='))
        .collect();
    if settings.is_empty() {
        options
    } else {
        options.options(settings)
    }
}

/// A `sqlx::PgPool` of up to 4 connections to the schema (connecting lazily,
/// as the deadpool pool does).
pub fn sqlx_pool(schema: &TestSchema) -> sqlx::PgPool {
    sqlx::postgres::PgPoolOptions::new()
        .max_connections(4)
        .connect_lazy_with(sqlx_options(schema))
}

/// A `sqlx::PgConnection` to the schema.
pub async fn sqlx_conn(schema: &TestSchema) -> sqlx::PgConnection {
    use sqlx::ConnectOptions;
    sqlx_options(schema)
        .connect()
        .await
        .expect("connect with sqlx")
}

/// Runs `f` with a synchronous `postgres::Client` connected to the schema, on a
/// blocking thread: the sync client drives its own runtime, which must not be
/// started on a tokio runtime thread. A panic in `f` fails the test.
pub async fn with_sync_client<T, F>(schema: &TestSchema, f: F) -> T
where
    F: FnOnce(&mut postgres::Client) -> T + Send + 'static,
    T: Send + 'static,
{
    let config = postgres::Config::from(schema.config());
    let task = tokio::task::spawn_blocking(move || {
        let mut client = config
            .connect(postgres::NoTls)
            .expect("connect with postgres (sync)");
        f(&mut client)
    });
    match task.await {
        Ok(value) => value,
        Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
        Err(e) => panic!("the blocking task did not finish: {e}"),
    }
}

/// `CREATE TABLE` with one nullable column per handle, typed by the handle's
/// `SqlType` (`Column<i64>` → `int8`), so the schema always agrees with the
/// handles.
pub fn create_table(table: &Table, columns: &[AnyColumn]) -> TableCreateStatement {
    let mut stmt = Ddl::create();
    stmt.table(table.table_name());
    for c in columns {
        stmt.col(ColumnDef::new(c.iden()).custom(c.sql_type()));
    }
    stmt
}

/// Runs [`create_table`].
pub async fn create<E: Executor>(e: &E, table: &Table, columns: &[AnyColumn]) {
    exec(e, &BuiltQuery::schema(&create_table(table, columns))).await;
}

/// `INSERT INTO table (columns) VALUES (row), (row), …`.
pub fn insert(
    table: &Table,
    columns: &[AnyColumn],
    rows: impl IntoIterator<Item = Vec<Expr>>,
) -> BuiltQuery {
    let mut stmt = Query::insert();
    stmt.into_table(table.table_name())
        .columns(columns.iter().map(AnyColumn::iden));
    for row in rows {
        stmt.values_panic(row);
    }
    BuiltQuery::from(&stmt)
}

/// `SELECT count(*) FROM table`.
pub async fn count_rows<E: Executor>(e: &E, table: &Table) -> i64 {
    let q = BuiltQuery::from(
        &Query::select()
            .expr(Expr::cust("count(*)"))
            .from(table.table_ref())
            .to_owned(),
    );
    fetch::<(i64,), _>(e, &q).await[0].0
}

/// Executes `q`, panicking with the statement and its values on error.
pub async fn exec<E: Executor>(e: &E, q: &BuiltQuery) -> u64 {
    e.run(q)
        .await
        .unwrap_or_else(|err| panic!("{q}\nfailed: {err}"))
}

/// Runs `q` and decodes its rows as `T`, panicking with the statement on error.
pub async fn fetch<T: FromRow + Send, E: Executor>(e: &E, q: &BuiltQuery) -> Vec<T> {
    e.rows_as::<T>(q)
        .await
        .unwrap_or_else(|err| panic!("{q}\nfailed: {err}"))
}

/// `ledger(id int4 PRIMARY KEY, amount int8)` under a given name: the table
/// the transaction and error tests change and inspect.
pub struct Ledger {
    pub table: Table,
    pub id: Column<i32>,
    pub amount: Column<i64>,
}

impl Ledger {
    pub fn new(name: &str) -> Ledger {
        let table = Table::new(name).expect("valid name");
        Ledger {
            id: table.column("id").expect("valid name"),
            amount: table.column("amount").expect("valid name"),
            table,
        }
    }

    /// `CREATE TABLE` with `id` as primary key.
    pub fn create(&self) -> BuiltQuery {
        let mut stmt = create_table(&self.table, &[self.id.erase(), self.amount.erase()]);
        stmt.primary_key(Index::create().col(self.id.iden()));
        BuiltQuery::schema(&stmt)
    }

    /// `INSERT` of `(id, amount)` rows.
    pub fn insert(&self, rows: &[(i32, i64)]) -> BuiltQuery {
        let columns = [self.id.erase(), self.amount.erase()];
        let rows = rows
            .iter()
            .map(|&(id, amount)| vec![id.param(), amount.param()]);
        insert(&self.table, &columns, rows)
    }

    /// `UPDATE … SET amount = amount + delta` on every row.
    pub fn add(&self, delta: i64) -> BuiltQuery {
        BuiltQuery::from(
            &Query::update()
                .table(self.table.table_name())
                .value(self.amount.iden(), self.amount.expr().add(delta.param()))
                .to_owned(),
        )
    }

    /// `SELECT id, amount … WHERE cond ORDER BY id`.
    pub fn select_where(&self, cond: Expr) -> BuiltQuery {
        BuiltQuery::from(
            &Query::select()
                .column(self.id.col_ref())
                .column(self.amount.col_ref())
                .from(self.table.table_ref())
                .and_where(cond)
                .order_by(self.id.col_ref(), Order::Asc)
                .to_owned(),
        )
    }

    /// Every row, by id.
    pub fn select(&self) -> BuiltQuery {
        self.select_where(Expr::cust("TRUE"))
    }

    /// Every row, by id, as seen by `e`.
    pub async fn rows<E: Executor>(&self, e: &E) -> Vec<(i32, i64)> {
        fetch(e, &self.select()).await
    }
}

/// A small deterministic PRNG (xorshift64*), so failures reproduce by seed.
pub struct Rng(pub u64);

impl Rng {
    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// A value in `0..n`.
    pub fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }

    /// `true` one time in `one_in`.
    pub fn chance(&mut self, one_in: u64) -> bool {
        self.below(one_in) == 0
    }
}

/// Latest count, first page and Auto's count; the rollup rows (without their
/// spec ids, which differ between two `Rollup` values). On `OrdersSeed` and
/// `SalesSeed::sample` data.
pub async fn latest_and_rollup<E: Executor>(e: &E) -> (i64, Vec<i64>, i64, Vec<String>) {
    let latest = OrdersTables::default().latest().status_eq("Complete");
    let auto = latest.clone().strategy(LatestStrategy::Auto);
    let page = latest
        .fetch_page::<(), i64>(e, &PageRequest::new(10))
        .await
        .unwrap();
    let rollup = SalesTables::sample().dashboard(false);
    let rows = rollup.fetch_all(e).await.unwrap();
    let rows = rows.iter().map(|r| {
        let text = format!("{r:?}");
        text[text.find("names:").unwrap_or(0)..].to_owned()
    });
    (
        latest.count(e).await.unwrap(),
        page.keys,
        auto.count(e).await.unwrap(),
        rows.collect(),
    )
}

/// Since (Exists) count, first page, and how many changes that page has;
/// Auto explains its choice and counts the same. On `MovesSeed` data made
/// at `now`.
pub async fn since_answers<E: Executor>(e: &E, now: DateTime<Utc>) -> (i64, Vec<i64>, usize) {
    let since = MovesTables::default()
        .seed_graph()
        .since(now - Duration::days(2));
    let exists = since.clone().strategy(SinceStrategy::Exists);
    let page = exists
        .fetch_page::<(i64,)>(e, &PageRequest::new(10))
        .await
        .unwrap();
    let changes = exists.fetch_changes(e, &page.keys).await.unwrap();
    let auto = since.strategy(SinceStrategy::Auto);
    let choice = auto.explain_choice(e, Shape::Count).await.unwrap();
    assert!(!choice.reason.is_empty());
    let count = exists.count(e).await.unwrap();
    assert_eq!(auto.count(e).await.unwrap(), count);
    (count, page.keys, changes.len())
}
