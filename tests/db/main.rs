//! Tests against a real PostgreSQL server.
//!
//! One test binary, so one throwaway cluster (`pgpatterns::testdb`, or
//! `DATABASE_URL`) serves every test; each test works in its own schema, so
//! they run in parallel. Without a server these tests fail: they never skip.

mod aliases;
mod auto;
mod auto_state;
mod blocking;
mod calibrate;
mod compare;
mod denormalized;
mod denormalized_trust;
mod errors;
mod executors;
mod explain;
mod hostile;
mod injection;
mod latest;
mod matview;
mod ops_archive;
mod ops_index;
mod ops_recent;
mod partition;
mod pgbouncer;
mod replica;
mod report_cache;
mod rollup;
mod rollup_strategies;
mod round_trips;
mod seed_orders;
mod since;
mod since_cursor;
mod since_tracked;
mod summary;
mod support;
mod top_n;
mod values;
mod wire;
