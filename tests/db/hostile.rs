//! Property tests against the real server: hostile identifiers, wrong rows
//! and derived-name collisions, for every family and every strategy.
//!
//! Each property draws random schemas whose table and column names come from
//! a hostile alphabet (quotes, `$`/`$$`, backslashes, unicode, upper case,
//! spaces, PL/pgSQL's special names such as `new`/`old`/`found`/`tg_op`, SQL
//! keywords, and the crate's own aliases like `latest`, `pgp_new_rows` or
//! `rollup_rank`, up to exactly 63 bytes), random data (ties, NULLs,
//! entities without history, empty tables) and random specs, runs every
//! strategy (the denormalized column installed and backfilled, and `Auto`)
//! and compares each answer with a plain-Rust reference. Every case works
//! in its own schema ([`support::schema`](crate::support::schema)).
//!
//! Runs are deterministic: proptest's ChaCha generator with a fixed seed,
//! no failure persistence. Knobs (environment variables):
//!
//! - `PGP_PROPTEST_SEED=<u64>`: another seed (each property mixes in its
//!   own name, so properties draw different cases from one seed);
//! - `PROPTEST_CASES=<n>`: cases per property (default: each property's own,
//!   8–12, sized so the file takes well under a minute on 2 cores);
//! - `PGP_PROPTEST_SHRINK=<n>`: shrink steps on failure (default 16, at most 30 s; each
//!   step is one more case against the server);
//! - `PGP_HOSTILE_SURVEY=1`: no shrinking; run every case, print each failing
//!   case with all its problems, then fail — for surveying a broken build.
//!
//! A failure prints the (shrunk) minimal case — names, data and options —
//! and every problem found in it (statement, error or row difference).

mod collide;
mod latest;
mod rollup;
mod since;

use std::fmt::Debug;

use proptest::prelude::*;
use proptest::strategy::ValueTree;
use proptest::test_runner::{Config, RngAlgorithm, TestCaseError, TestError, TestRng, TestRunner};

/// The default seed (`PGP_PROPTEST_SEED` overrides it).
const DEFAULT_SEED: u64 = 0x005E_ED0F_0BAD_1DE5;

fn env_u64(name: &str) -> Option<u64> {
    let v = std::env::var(name).ok()?;
    match v.trim().parse() {
        Ok(n) => Some(n),
        Err(_) => panic!("{name}={v:?} is not a number"),
    }
}

/// A deterministic runner for the property `name`.
fn runner(name: &str, cases: u32) -> TestRunner {
    let seed = env_u64("PGP_PROPTEST_SEED").unwrap_or(DEFAULT_SEED);
    // FNV-1a of the name, so each property has its own stream.
    let mix = name.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3)
    });
    let mut bytes = [0u8; 32];
    for (i, chunk) in bytes.chunks_mut(8).enumerate() {
        let word = (seed ^ mix).rotate_left(17 * i as u32) ^ (i as u64).wrapping_mul(0x9E37_79B9);
        chunk.copy_from_slice(&word.to_le_bytes());
    }
    let cases = env_u64("PROPTEST_CASES").map_or(cases, |n| n as u32);
    let shrink = env_u64("PGP_PROPTEST_SHRINK").unwrap_or(16) as u32;
    let config = Config {
        cases,
        failure_persistence: None,
        rng_algorithm: RngAlgorithm::ChaCha,
        max_shrink_iters: shrink,
        max_shrink_time: 30_000,
        max_global_rejects: 10_000,
        ..Config::default()
    };
    TestRunner::new_with_rng(config, TestRng::from_seed(RngAlgorithm::ChaCha, &bytes))
}

/// Runs `case` on `cases` generated values; panics with the minimal failing
/// value and its problems (or, in survey mode, with every failing case).
fn check<S>(name: &str, cases: u32, strategy: S, case: impl Fn(&S::Value) -> Problems)
where
    S: Strategy,
    S::Value: Debug,
{
    let mut runner = runner(name, cases);
    if std::env::var_os("PGP_HOSTILE_SURVEY").is_some() {
        let cases = runner.config().cases;
        let mut failed = Vec::new();
        for i in 0..cases {
            let value = strategy
                .new_tree(&mut runner)
                .expect("generate a case")
                .current();
            let problems = case(&value);
            if !problems.0.is_empty() {
                eprintln!(
                    "=== {name}: case {i} FAILED\n{value:#?}\n--- problems:\n{}\n",
                    problems.0.join("\n")
                );
                failed.push(i);
            }
        }
        assert!(failed.is_empty(), "{name}: failing cases {failed:?}");
        return;
    }
    let outcome = runner.run(&strategy, |value| {
        let problems = case(&value);
        if problems.0.is_empty() {
            Ok(())
        } else {
            Err(TestCaseError::fail(problems.0.join("\n")))
        }
    });
    match outcome {
        Ok(()) => {}
        Err(TestError::Fail(reason, value)) => {
            panic!("{name}: minimal failing case:\n{value:#?}\n--- problems:\n{reason}")
        }
        Err(e) => panic!("{name}: {e}"),
    }
}

/// Every problem found in one case (empty: the case passed).
#[derive(Debug, Default)]
struct Problems(Vec<String>);

impl Problems {
    fn add(&mut self, what: impl Into<String>) {
        let mut what = what.into();
        if what.len() > 3000 {
            let mut cut = 3000;
            while !what.is_char_boundary(cut) {
                cut -= 1;
            }
            what.truncate(cut);
            what.push_str(" …");
        }
        // A few dozen are plenty; a broken strategy repeats itself.
        if self.0.len() < 40 && !self.0.contains(&what) {
            self.0.push(what);
        }
    }

    /// Records `Err` with `ctx`; returns the value of `Ok`.
    fn ok<T, E: std::fmt::Display>(
        &mut self,
        ctx: impl FnOnce() -> String,
        r: Result<T, E>,
    ) -> Option<T> {
        match r {
            Ok(v) => Some(v),
            Err(e) => {
                self.add(format!("{}: ERROR {e}", ctx()));
                None
            }
        }
    }

    /// Records a difference between `got` and `want`.
    fn same<T: PartialEq + Debug>(&mut self, ctx: impl FnOnce() -> String, got: &T, want: &T) {
        if got != want {
            self.add(format!("{}: got {got:?}, want {want:?}", ctx()));
        }
    }
}

/// A multi-thread runtime for one case (the schema's connections and the
/// schema's drop work inside it).
fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("a tokio runtime")
}

/// Names PL/pgSQL, SQL and this crate give meaning to.
const SPECIAL: &[&str] = &[
    "new",
    "old",
    "NEW",
    "Old",
    "found",
    "tg_op",
    "tg_table_name",
    "tg_name",
    "tg_when",
    "tg_level",
    "tg_relid",
    "tg_argv",
    "tg_nargs",
    "result",
    "select",
    "order",
    "group",
    "user",
    "table",
    "latest",
    "latest_status",
    "latest_at",
    "latest_rn",
    "latest_skip",
    "latest_prev",
    "latest_next",
    "newer",
    "pgp_new_rows",
    "pgp_old_rows",
    "pgp_key",
    "pgp_status",
    "pgp_fresh",
    "pgp_changed",
    "pgp_locked",
    "stored_status",
    "rollup_grouping",
    "rollup_rank",
    "rollup_pre",
    "grouped",
    "ranked",
    "d0",
    "m0",
    "since_key",
    "since_at",
    "matching",
    "r0",
    "t1",
    "t2",
    "j1",
    "key",
    "rel",
    "newest",
];

/// The most dangerous of them, drawn more often.
const DANGER: &[&str] = &[
    "new",
    "old",
    "found",
    "tg_op",
    "result",
    "latest",
    "newer",
    "pgp_new_rows",
    "pgp_old_rows",
    "pgp_fresh",
    "pgp_changed",
    "rollup_rank",
    "since_key",
    "r0",
    "t1",
];

/// Pieces hostile names are glued from.
const FRAGMENTS: &[&str] = &[
    "\"", "'", "$", "$$", "$1", "\\", "é", "中", "🚀", "Ω", "A", "Zz", " ", "_", ";", "--", "/*",
    "x", "new", "old", "found", "tg_op", "latest", "pgp_", "select", ".", "(", ")", "%", "?",
    "$pgp$",
];

/// Cuts `s` to at most 63 bytes on a character boundary; never empty.
fn fit(mut s: String) -> String {
    if s.is_empty() {
        s.push('x');
    }
    let mut cut = s.len().min(63);
    while !s.is_char_boundary(cut) {
        cut -= 1;
    }
    s.truncate(cut);
    s
}

/// One identifier: plain, special, glued from fragments, or long (up to
/// exactly 63 bytes, multi-byte characters included). Shrinks towards plain.
fn ident() -> impl Strategy<Value = String> {
    let special = prop::sample::select(SPECIAL).prop_map(str::to_owned);
    prop_oneof![
        2 => "[a-z]{1,6}",
        3 => prop::sample::select(DANGER).prop_map(str::to_owned),
        3 => special.clone(),
        1 => special.prop_map(|s| format!("pgp_{s}")),
        3 => prop::collection::vec(prop::sample::select(FRAGMENTS), 1..6).prop_map(|v| v.concat()),
        1 => (prop::sample::select(FRAGMENTS), prop::sample::select(&["é", "中", "🚀", "x", "\""][..]))
            .prop_map(|(head, fill)| {
                let mut s = head.to_owned();
                while s.len() + fill.len() <= 63 {
                    s.push_str(fill);
                }
                s
            }),
    ]
    .prop_map(fit)
}

/// `n` identifiers, made distinct (exactly: `"A"` and `"a"` are different).
fn idents(n: usize) -> impl Strategy<Value = Vec<String>> {
    prop::collection::vec(ident(), n).prop_map(distinct)
}

/// Makes names distinct by suffixing repeats (`x`, `x#2`), within 63 bytes.
fn distinct(names: Vec<String>) -> Vec<String> {
    let mut out: Vec<String> = Vec::with_capacity(names.len());
    for n in names {
        let mut candidate = n.clone();
        let mut i = 2;
        while out.contains(&candidate) {
            let suffix = format!("#{i}");
            let mut head = n.clone();
            let mut cut = head.len().min(63 - suffix.len());
            while !head.is_char_boundary(cut) {
                cut -= 1;
            }
            head.truncate(cut);
            candidate = head + &suffix;
            i += 1;
        }
        out.push(candidate);
    }
    out
}

/// Hostile text values (statuses, dimension values, keys).
const VALUES: &[&str] = &[
    "Pending",
    "",
    "it's",
    "say \"hi\"",
    "$$",
    "$1",
    "back\\slash",
    "NULL",
    "x' OR '1'='1",
    "Ünïcødé 🚀",
    " ",
    "pending",
];

fn value() -> impl Strategy<Value = String> {
    prop::sample::select(VALUES).prop_map(str::to_owned)
}

#[test]
fn names_fit_and_are_distinct() {
    let mut runner = runner("names", 256);
    let s = idents(8);
    for _ in 0..256 {
        let names = s.new_tree(&mut runner).unwrap().current();
        for n in &names {
            assert!(!n.is_empty() && n.len() <= 63 && !n.contains('\0'), "{n:?}");
            pgpatterns::Ident::new(n).unwrap();
        }
        let mut sorted = names.clone();
        sorted.sort();
        sorted.dedup();
        assert_eq!(sorted.len(), names.len(), "{names:?}");
    }
}
