//! Operations from seed 002 built on the query families: reports and the
//! indexes that serve them.
//!
//! - [`top_n`]: top N entities by a metric over a time window with filters
//!   ("top 10 users by total spent in the last 30 days, completed orders"),
//!   and its index advice.

pub mod top_n;

pub use top_n::{TopN, TopRow};
