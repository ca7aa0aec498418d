//! Realistic demo data shaped like the problems this crate answers, generated
//! server-side (`generate_series`, no row-by-row round trips) for examples,
//! benchmarks and tests.
//!
//! Each seeder creates its tables in the connection's current schema (the
//! first schema on `search_path`) and reports progress through a callback
//! taking a [`Progress`](crate::Progress).

pub mod moves;
pub mod orders;
pub mod sales;
pub mod shop;
