//! SQL snapshots of every strategy, page, what-changed and index advice.

use chrono::{DateTime, NaiveDateTime, TimeZone, Utc};
use pretty_assertions::assert_eq;

use super::*;
use crate::{PageOrder, PageRequest, Relation, Table, MAX_CURSOR_LEN};

fn at() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2021, 7, 16, 0, 0, 0).unwrap()
}

/// moves (timestamp) → orders (parent, timestamp) → service_members
/// (parent of orders); moves ← mto_shipments (child, timestamptz) →
/// addresses (parent of shipments).
fn graph() -> SinceGraph<i64> {
    let moves = Table::new("moves").unwrap();
    let orders = Table::new("orders").unwrap();
    let sm = Table::new("service_members").unwrap();
    let ship = Table::new("mto_shipments").unwrap();
    let addr = Table::new("addresses").unwrap();
    let id = moves.column::<i64>("id").unwrap();
    let to_orders = Relation::new(
        &moves.column::<i64>("orders_id").unwrap(),
        &orders.column::<i64>("id").unwrap(),
    );
    let to_ship = Relation::new(&ship.column::<i64>("move_id").unwrap(), &id);
    SinceGraph::new(&id, moves.column::<NaiveDateTime>("updated_at").unwrap())
        .filter(moves.column::<bool>("show").unwrap().eq(true))
        .related(
            "orders",
            to_orders.clone(),
            orders.column::<NaiveDateTime>("updated_at").unwrap(),
        )
        .path(
            "service_members",
            [
                to_orders,
                Relation::new(
                    &orders.column::<i64>("service_member_id").unwrap(),
                    &sm.column::<i64>("id").unwrap(),
                ),
            ],
            sm.column::<NaiveDateTime>("updated_at").unwrap(),
        )
        .related(
            "shipments",
            to_ship.clone(),
            ship.column::<DateTime<Utc>>("updated_at").unwrap(),
        )
        .path(
            "pickup_addresses",
            [
                to_ship,
                Relation::new(
                    &ship.column::<i64>("pickup_address_id").unwrap(),
                    &addr.column::<i64>("id").unwrap(),
                ),
            ],
            addr.column::<DateTime<Utc>>("updated_at").unwrap(),
        )
}

fn sql(s: SinceStrategy) -> String {
    graph()
        .since(at())
        .strategy(s)
        .build()
        .unwrap()
        .sql()
        .to_owned()
}

#[test]
fn union_in_snapshot() {
    assert_eq!(
        sql(SinceStrategy::UnionIn),
        r#"SELECT "moves".* FROM "moves" WHERE "moves"."show" = CAST($1 AS bool) AND ("moves"."updated_at" >= CAST($2 AS timestamp) OR "moves"."orders_id" IN (SELECT "t1"."id" FROM "orders" AS "t1" WHERE "t1"."updated_at" >= CAST($3 AS timestamp) UNION (SELECT "t1"."id" FROM "orders" AS "t1" INNER JOIN "service_members" AS "t2" ON "t1"."service_member_id" = "t2"."id" WHERE "t2"."updated_at" >= CAST($4 AS timestamp))) OR "moves"."id" IN (SELECT "t3"."move_id" FROM "mto_shipments" AS "t3" WHERE "t3"."updated_at" >= CAST($5 AS timestamptz) UNION (SELECT "t3"."move_id" FROM "mto_shipments" AS "t3" INNER JOIN "addresses" AS "t4" ON "t3"."pickup_address_id" = "t4"."id" WHERE "t4"."updated_at" >= CAST($6 AS timestamptz))))"#
    );
}

#[test]
fn exists_snapshot() {
    assert_eq!(
        sql(SinceStrategy::Exists),
        r#"SELECT "moves".* FROM "moves" WHERE "moves"."show" = CAST($1 AS bool) AND ("moves"."updated_at" >= CAST($2 AS timestamp) OR EXISTS(SELECT 1 FROM "orders" AS "t1" WHERE "moves"."orders_id" = "t1"."id" AND "t1"."updated_at" >= CAST($3 AS timestamp)) OR EXISTS(SELECT 1 FROM "orders" AS "t1" INNER JOIN "service_members" AS "t2" ON "t1"."service_member_id" = "t2"."id" WHERE "moves"."orders_id" = "t1"."id" AND "t2"."updated_at" >= CAST($4 AS timestamp)) OR EXISTS(SELECT 1 FROM "mto_shipments" AS "t3" WHERE "moves"."id" = "t3"."move_id" AND "t3"."updated_at" >= CAST($5 AS timestamptz)) OR EXISTS(SELECT 1 FROM "mto_shipments" AS "t3" INNER JOIN "addresses" AS "t4" ON "t3"."pickup_address_id" = "t4"."id" WHERE "moves"."id" = "t3"."move_id" AND "t4"."updated_at" >= CAST($6 AS timestamptz)))"#
    );
}

#[test]
fn or_joins_snapshot() {
    assert_eq!(
        sql(SinceStrategy::OrJoins),
        r#"SELECT "moves".* FROM "moves" LEFT JOIN "orders" AS "t1" ON "moves"."orders_id" = "t1"."id" LEFT JOIN "service_members" AS "t2" ON "t1"."service_member_id" = "t2"."id" LEFT JOIN "mto_shipments" AS "t3" ON "moves"."id" = "t3"."move_id" LEFT JOIN "addresses" AS "t4" ON "t3"."pickup_address_id" = "t4"."id" WHERE "moves"."show" = CAST($1 AS bool) AND ("moves"."updated_at" >= CAST($2 AS timestamp) OR "t1"."updated_at" >= CAST($3 AS timestamp) OR "t2"."updated_at" >= CAST($4 AS timestamp) OR "t3"."updated_at" >= CAST($5 AS timestamptz) OR "t4"."updated_at" >= CAST($6 AS timestamptz)) GROUP BY "moves"."id""#
    );
}

#[test]
fn greatest_group_by_snapshot() {
    assert_eq!(
        sql(SinceStrategy::GreatestGroupBy),
        r#"SELECT "moves".* FROM "moves" LEFT JOIN "orders" AS "t1" ON "moves"."orders_id" = "t1"."id" LEFT JOIN "service_members" AS "t2" ON "t1"."service_member_id" = "t2"."id" LEFT JOIN "mto_shipments" AS "t3" ON "moves"."id" = "t3"."move_id" LEFT JOIN "addresses" AS "t4" ON "t3"."pickup_address_id" = "t4"."id" WHERE "moves"."show" = CAST($1 AS bool) GROUP BY "moves"."id" HAVING MAX(GREATEST(("moves"."updated_at" AT TIME ZONE 'UTC'), ("t1"."updated_at" AT TIME ZONE 'UTC'), ("t2"."updated_at" AT TIME ZONE 'UTC'), "t3"."updated_at", "t4"."updated_at")) >= CAST($2 AS timestamptz)"#
    );
}

#[test]
fn page_snapshots() {
    let q = graph().since(at()).strategy(SinceStrategy::Exists);
    let by_key = q.page_query(&PageRequest::new(50)).unwrap();
    assert!(
        by_key.sql().starts_with(
            r#"SELECT "moves".*, "moves"."id" AS "since_key", "moves"."updated_at" AS "since_at" FROM "moves" WHERE "#
        ),
        "{}",
        by_key.sql()
    );
    assert!(
        by_key
            .sql()
            .ends_with(r#" ORDER BY "moves"."id" ASC LIMIT $7"#),
        "{}",
        by_key.sql()
    );
    let by_time = q
        .page_query(&PageRequest::new(50).order(PageOrder::ChangeTime))
        .unwrap();
    assert!(
        by_time
            .sql()
            .ends_with(r#" ORDER BY "moves"."updated_at" ASC, "moves"."id" ASC LIMIT $7"#),
        "{}",
        by_time.sql()
    );
}

#[test]
fn cursors_continue_and_are_checked() {
    let q = graph().since(at());
    let c = q
        .encode_cursor(PageOrder::ChangeTime, Some(1_000_000), &41)
        .unwrap();
    assert!(c
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'));
    let req = PageRequest::new(10).order(PageOrder::ChangeTime).after(&c);
    let page = q.page_query(&req).unwrap();
    assert!(
        page.sql().contains(
            r#"AND (("moves"."updated_at", "moves"."id") > (CAST($7 AS timestamp), CAST($8 AS int8)) OR "moves"."updated_at" IS NULL) ORDER BY"#
        ),
        "{}",
        page.sql()
    );
    let null_at = q.encode_cursor(PageOrder::ChangeTime, None, &41).unwrap();
    let page = q
        .page_query(
            &PageRequest::new(10)
                .order(PageOrder::ChangeTime)
                .after(null_at),
        )
        .unwrap();
    assert!(
        page.sql().contains(
            r#"AND ("moves"."updated_at" IS NULL AND "moves"."id" > CAST($7 AS int8)) ORDER BY"#
        ),
        "{}",
        page.sql()
    );
    let key_cursor = q.encode_cursor(PageOrder::Key, None, &41).unwrap();
    let page = q
        .page_query(&PageRequest::new(10).after(&key_cursor))
        .unwrap();
    assert!(page
        .sql()
        .contains(r#"AND "moves"."id" > CAST($7 AS int8) ORDER BY"#));
    // every strategy continues a cursor (Auto may switch between pages)
    for strategy in SinceStrategy::ALL {
        assert!(q
            .clone()
            .strategy(strategy)
            .page_query(&PageRequest::new(10).after(&key_cursor))
            .is_ok());
    }

    // Refusals: each is a typed InvalidSpec on "cursor" or "limit".
    let cursor_err = |req: PageRequest| match q.page_query(&req) {
        Err(crate::Error::InvalidSpec {
            field: "cursor",
            reason,
        }) => reason,
        other => panic!("expected a cursor error, got {other:?}"),
    };
    cursor_err(PageRequest::new(10).after("zz"));
    cursor_err(PageRequest::new(10).after(""));
    cursor_err(PageRequest::new(10).after(c.to_uppercase()));
    // a ChangeTime cursor for a Key page
    assert!(cursor_err(PageRequest::new(10).after(&c)).contains("another page order"));
    cursor_err(PageRequest::new(10).after("A".repeat(MAX_CURSOR_LEN + 4)));
    // an old hex cursor: told to start again
    let old = "736331".to_owned() + &"7c6b".repeat(10);
    assert!(cursor_err(PageRequest::new(10).after(old)).contains("older version"));
    // hand-made payloads with a valid checksum: each field is still checked
    use super::page::tests_support::{checksummed, fingerprint, forge};
    let fp = fingerprint(&q, PageOrder::Key).to_be_bytes();
    let body = |head: &[u8], key: &[u8]| [head, &fp, key].concat();
    assert!(q
        .page_query(&PageRequest::new(10).after(checksummed(&body(&[2, b'k', 0], b"1"))))
        .is_ok());
    for (bad, why) in [
        (body(&[3, b'k', 0], b"1"), "unknown version"),
        (body(&[2, b'x', 0], b"1"), "unknown page order"),
        (body(&[2, b'k', 2], b"1"), "bad time flag"),
        (body(&[2, b'k', 1], b"1"), "bad time flag"), // a Key cursor carries no time
        (body(&[2, b'k', 0], b"01"), "not a valid key"),
        (body(&[2, b'k', 0], b""), "not a valid key"),
        (body(&[2, b'k', 0], b"\xff"), "not UTF-8"),
        (vec![2, b'k', 0], "cut short"),
        (vec![2, b'k'], "cut short"),
        (vec![], "cut short"),
    ] {
        let reason = cursor_err(PageRequest::new(10).after(checksummed(&bad)));
        assert!(reason.contains(why), "{bad:?}: {reason}");
    }
    // another key type
    let q4 = graph_with_key::<i32>().since(at());
    let c4 = q4.encode_cursor(PageOrder::Key, None, &41).unwrap();
    assert!(cursor_err(PageRequest::new(10).after(c4)).contains("another query"));
    // the same cursor under another `since`, filter, offset or graph
    for other in [
        graph().since(at() + chrono::Duration::days(1)),
        graph().since(at() + chrono::Duration::microseconds(1)),
        graph()
            .filter(
                Table::new("moves")
                    .unwrap()
                    .column::<i32>("n")
                    .unwrap()
                    .eq(1),
            )
            .since(at()),
        graph()
            .timestamp_offset(chrono::FixedOffset::east_opt(3600).unwrap())
            .since(at()),
    ] {
        let reason = match other.page_query(&PageRequest::new(10).after(&key_cursor)) {
            Err(crate::Error::InvalidSpec {
                field: "cursor",
                reason,
            }) => reason,
            r => panic!("expected a cursor error, got {r:?}"),
        };
        assert!(reason.contains("another query"), "{reason}");
    }
    // another max_limit is the same query
    assert!(graph()
        .max_limit(5000)
        .since(at())
        .page_query(&PageRequest::new(10).after(&key_cursor))
        .is_ok());
    // times PostgreSQL cannot hold, in a well-formed cursor
    let year = |y: i32| {
        Utc.with_ymd_and_hms(y, 1, 1, 0, 0, 0)
            .unwrap()
            .timestamp_micros()
    };
    for micros in [
        year(-4800),
        change::PG_MIN_MICROS - 1,
        i64::MIN,
        i64::MAX,
        DateTime::<Utc>::MAX_UTC.timestamp_micros() + 1,
    ] {
        let forged = forge(&q, PageOrder::ChangeTime, Some(micros), "1");
        let req = PageRequest::new(10).order(PageOrder::ChangeTime);
        let reason = cursor_err(req.after(forged));
        assert!(
            reason.contains("out of PostgreSQL's range"),
            "{micros}: {reason}"
        );
    }
    for micros in [
        change::PG_MIN_MICROS,
        DateTime::<Utc>::MAX_UTC.timestamp_micros(),
    ] {
        let forged = forge(&q, PageOrder::ChangeTime, Some(micros), "1");
        let req = PageRequest::new(10).order(PageOrder::ChangeTime);
        assert!(q.page_query(&req.after(forged)).is_ok(), "{micros}");
    }
    for limit in [0, -1, SINCE_DEFAULT_MAX_LIMIT + 1] {
        assert!(matches!(
            q.page_query(&PageRequest::new(limit)),
            Err(crate::Error::InvalidSpec { field: "limit", .. })
        ));
    }
    assert!(q
        .page_query(&PageRequest::new(SINCE_DEFAULT_MAX_LIMIT))
        .is_ok());
}

/// The same graph keyed by another integer type.
/// Cursor errors read "invalid cursor: <reason>", never "cursor" twice.
#[test]
fn cursor_errors_say_cursor_once() {
    let q = graph().since(at());
    let shown = |req: PageRequest| q.page_query(&req).unwrap_err().to_string();
    assert_eq!(
        shown(PageRequest::new(10).after("zz!")),
        "invalid cursor: not base64url; pass a page's `next` unchanged, or start again from \
         the first page"
    );
    let time = q
        .encode_cursor(PageOrder::ChangeTime, Some(1_000_000), &41)
        .unwrap();
    assert_eq!(
        shown(PageRequest::new(10).after(&time)),
        "invalid cursor: made for another page order (ChangeTime, not Key); it continues \
         only the walk it came from"
    );
    let mut cut = time.clone();
    cut.truncate(cut.len() - 3);
    let old = "736331".to_owned() + &"7c6b".repeat(10);
    for req in [
        PageRequest::new(10).after(""),
        PageRequest::new(10).order(PageOrder::ChangeTime).after(cut),
        PageRequest::new(10).after(old),
        PageRequest::new(10).after("A".repeat(MAX_CURSOR_LEN + 4)),
        PageRequest::new(10).after(
            graph_with_key::<i32>()
                .since(at())
                .encode_cursor(PageOrder::Key, None, &41)
                .unwrap(),
        ),
    ] {
        let text = shown(req);
        assert!(text.starts_with("invalid cursor: "), "{text}");
        assert_eq!(text.matches("cursor").count(), 1, "{text}");
    }
}

fn graph_with_key<K: crate::types::SqlType>() -> SinceGraph<K> {
    let moves = Table::new("moves").unwrap();
    SinceGraph::new(
        &moves.column::<K>("id").unwrap(),
        moves.column::<NaiveDateTime>("updated_at").unwrap(),
    )
}

#[test]
fn the_text_key_pg_min_constant_is_julian_day_zero() {
    let jd0 = chrono::NaiveDate::from_ymd_opt(-4713, 11, 24)
        .unwrap()
        .and_hms_opt(0, 0, 0)
        .unwrap()
        .and_utc();
    assert_eq!(jd0.timestamp_micros(), change::PG_MIN_MICROS);
}

#[test]
fn cursors_hold_long_keys_or_refuse_them_when_made() {
    let moves = Table::new("moves").unwrap();
    let g = SinceGraph::new(
        &moves.column::<String>("id").unwrap(),
        moves.column::<DateTime<Utc>>("updated_at").unwrap(),
    );
    let q = g.since(at());
    for len in [0, 1, 3000, 20_000, 49_000] {
        let key = "é".repeat(len / 2);
        for (order, t) in [
            (PageOrder::Key, None),
            (PageOrder::ChangeTime, Some(at().timestamp_micros())),
        ] {
            let c = q.encode_cursor(order, t, &key).unwrap();
            assert!(c.len() <= MAX_CURSOR_LEN, "{len}: {}", c.len());
            let page = q
                .page_query(&PageRequest::new(10).order(order).after(&c))
                .unwrap();
            assert_eq!(
                page.values().0.last().cloned(),
                Some(10u64.into()),
                "the limit, after the key"
            );
            // base64url: 4 characters per 3 bytes, plus a fixed overhead
            assert!(c.len() <= (key.len() + 27).div_ceil(3) * 4, "{}", c.len());
        }
    }
    // too long for any cursor: refused when made
    let key = "k".repeat(MAX_CURSOR_LEN / 4 * 3);
    match q.encode_cursor(PageOrder::Key, None, &key) {
        Err(crate::Error::InvalidSpec {
            field: "cursor",
            reason,
        }) => assert!(reason.contains("too long"), "{reason}"),
        other => panic!("expected an error, got {other:?}"),
    }
    // the longest key that fits, and one byte more
    let fits = MAX_CURSOR_LEN / 4 * 3 - 3 - 8 - 8 - 8;
    for (order, t, fits) in [
        (PageOrder::Key, None, fits + 8),
        (PageOrder::ChangeTime, Some(0), fits),
    ] {
        let c = q.encode_cursor(order, t, &"k".repeat(fits)).unwrap();
        assert_eq!(c.len(), MAX_CURSOR_LEN);
        assert!(q
            .page_query(&PageRequest::new(1).order(order).after(c))
            .is_ok());
        assert!(q.encode_cursor(order, t, &"k".repeat(fits + 1)).is_err());
    }
}

#[test]
fn out_of_range_since_is_refused() {
    let year = |y: i32| Utc.with_ymd_and_hms(y, 1, 1, 0, 0, 0).unwrap();
    for bad in [
        year(-4800),
        DateTime::<Utc>::MIN_UTC,
        DateTime::from_timestamp_micros(change::PG_MIN_MICROS - 1).unwrap(),
    ] {
        assert!(matches!(
            graph().since(bad).check(),
            Err(crate::Error::InvalidSpec { field: "since", .. })
        ));
        // Every way to use the query refuses it before any SQL exists.
        assert!(graph().since(bad).build().is_err());
        assert!(graph().since(bad).count_query().is_err());
        assert!(graph().since(bad).changes_query(&[1]).is_err());
    }
    // year 300000 (or 294277) is past chrono's last year: no DateTime holds it
    assert!(Utc
        .with_ymd_and_hms(294_277, 1, 1, 0, 0, 0)
        .single()
        .is_none());
    let first = DateTime::from_timestamp_micros(change::PG_MIN_MICROS).unwrap();
    assert!(graph().since(first).check().is_ok());
    assert!(graph().since(DateTime::<Utc>::MAX_UTC).check().is_ok());
    // in range in UTC, out of range as `timestamp` wall-clock time west of UTC
    let west = chrono::FixedOffset::west_opt(3600).unwrap();
    assert!(matches!(
        graph().timestamp_offset(west).since(first).check(),
        Err(crate::Error::InvalidSpec { field: "since", .. })
    ));
}

mod cursor_mutations {
    use proptest::prelude::*;

    use super::*;

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]

        /// Random damage to a valid cursor is refused, or leaves it as it
        /// was: never another page, never an error from the server.
        #[test]
        fn damaged_cursors_are_refused(
            key in "[a-z0-9é|]{0,40}",
            by_time in any::<bool>(),
            edits in prop::collection::vec((any::<usize>(), any::<u8>(), 0u8..4), 1..4),
        ) {
            let moves = Table::new("moves").unwrap();
            let q = SinceGraph::new(
                &moves.column::<String>("id").unwrap(),
                moves.column::<DateTime<Utc>>("updated_at").unwrap(),
            )
            .since(at());
            let (order, t) = if by_time {
                (PageOrder::ChangeTime, Some(at().timestamp_micros() + 17))
            } else {
                (PageOrder::Key, None)
            };
            let good = q.encode_cursor(order, t, &key).unwrap();
            let mut bytes = good.clone().into_bytes();
            for (at, byte, kind) in edits {
                let i = at % (bytes.len() + 1);
                match kind {
                    0 if i < bytes.len() => bytes[i] = byte,
                    1 if i < bytes.len() => {
                        bytes.remove(i);
                    }
                    2 => bytes.insert(i, byte),
                    _ => bytes.truncate(i),
                }
            }
            let bad = String::from_utf8_lossy(&bytes).into_owned();
            let res = q.page_query(&PageRequest::new(5).order(order).after(&bad));
            if bad == good {
                prop_assert!(res.is_ok());
            } else {
                prop_assert!(
                    matches!(res, Err(crate::Error::InvalidSpec { field: "cursor", .. })),
                    "{bad:?} gave {res:?}"
                );
            }
        }
    }
}

#[test]
fn changes_snapshot() {
    let q = graph().since(at());
    let built = q.changes_query(&[1, 2]).unwrap();
    assert_eq!(
        built.sql(),
        r#"SELECT "moves"."id" AS "key", CAST($1 AS int4) AS "rel", ("moves"."updated_at" AT TIME ZONE 'UTC') AS "newest" FROM "moves" WHERE "moves"."id" = ANY(CAST($2 AS int8[])) AND "moves"."updated_at" >= CAST($3 AS timestamp) UNION ALL (SELECT "moves"."id" AS "key", CAST($4 AS int4) AS "rel", (MAX("t1"."updated_at") AT TIME ZONE 'UTC') AS "newest" FROM "moves" INNER JOIN "orders" AS "t1" ON "moves"."orders_id" = "t1"."id" WHERE "moves"."id" = ANY(CAST($5 AS int8[])) AND "t1"."updated_at" >= CAST($6 AS timestamp) GROUP BY "moves"."id") UNION ALL (SELECT "moves"."id" AS "key", CAST($7 AS int4) AS "rel", (MAX("t2"."updated_at") AT TIME ZONE 'UTC') AS "newest" FROM "moves" INNER JOIN "orders" AS "t1" ON "moves"."orders_id" = "t1"."id" INNER JOIN "service_members" AS "t2" ON "t1"."service_member_id" = "t2"."id" WHERE "moves"."id" = ANY(CAST($8 AS int8[])) AND "t2"."updated_at" >= CAST($9 AS timestamp) GROUP BY "moves"."id") UNION ALL (SELECT "moves"."id" AS "key", CAST($10 AS int4) AS "rel", MAX("t3"."updated_at") AS "newest" FROM "moves" INNER JOIN "mto_shipments" AS "t3" ON "moves"."id" = "t3"."move_id" WHERE "moves"."id" = ANY(CAST($11 AS int8[])) AND "t3"."updated_at" >= CAST($12 AS timestamptz) GROUP BY "moves"."id") UNION ALL (SELECT "moves"."id" AS "key", CAST($13 AS int4) AS "rel", MAX("t4"."updated_at") AS "newest" FROM "moves" INNER JOIN "mto_shipments" AS "t3" ON "moves"."id" = "t3"."move_id" INNER JOIN "addresses" AS "t4" ON "t3"."pickup_address_id" = "t4"."id" WHERE "moves"."id" = ANY(CAST($14 AS int8[])) AND "t4"."updated_at" >= CAST($15 AS timestamptz) GROUP BY "moves"."id")"#
    );
    let too_many: Vec<i64> = (0..=SINCE_DEFAULT_MAX_LIMIT).collect();
    assert!(q.changes_query(&too_many).is_err());
}

#[test]
fn timestamp_offset_shifts_the_bound_value() {
    let moves = Table::new("moves").unwrap();
    let g = SinceGraph::new(
        &moves.column::<i64>("id").unwrap(),
        moves.column::<NaiveDateTime>("updated_at").unwrap(),
    )
    .timestamp_offset(chrono::FixedOffset::east_opt(2 * 3600).unwrap());
    let q = g.since(at());
    let want = at().naive_utc() + chrono::Duration::hours(2);
    assert_eq!(q.since.naive, want);
    let built = q.strategy(SinceStrategy::GreatestGroupBy).build().unwrap();
    assert!(built.sql().contains(
        r#"MAX(GREATEST((("moves"."updated_at" - CAST($1 AS int8) * INTERVAL '1 second') AT TIME ZONE 'UTC')))"#
    ), "{}", built.sql());
    // out of chrono's range in that offset
    assert!(g.since(DateTime::<Utc>::MAX_UTC).check().is_err());
}

#[test]
fn bad_graphs_are_refused() {
    let moves = Table::new("moves").unwrap();
    let orders = Table::new("orders").unwrap();
    let sm = Table::new("service_members").unwrap();
    let id = moves.column::<i64>("id").unwrap();
    let changed = moves.column::<DateTime<Utc>>("updated_at").unwrap();
    let g = || SinceGraph::new(&id, &changed);
    let orders_changed = orders.column::<DateTime<Utc>>("updated_at").unwrap();
    let sm_link = Relation::new(
        &orders.column::<i64>("service_member_id").unwrap(),
        &sm.column::<i64>("id").unwrap(),
    );
    let spec_err = |g: SinceGraph<i64>, field: &str| match g.since(at()).check() {
        Err(crate::Error::InvalidSpec { field: f, reason }) => {
            assert_eq!(f, field, "{reason}");
            reason
        }
        other => panic!("expected InvalidSpec({field}), got {other:?}"),
    };
    // a path that does not start at the root
    let reason = spec_err(
        g().related(
            "sm",
            sm_link.clone(),
            sm.column::<DateTime<Utc>>("u").unwrap(),
        ),
        "path",
    );
    assert!(reason.contains("does not connect to moves"), "{reason}");
    // a change column on another table than the path's end
    spec_err(
        g().related(
            "orders",
            Relation::new(
                &moves.column::<i64>("orders_id").unwrap(),
                &orders.column::<i64>("id").unwrap(),
            ),
            &changed,
        ),
        "change column",
    );
    // a non-time column known only at run time
    let text = orders.column::<String>("status").unwrap().erase();
    spec_err(
        g().related(
            "orders",
            Relation::new(
                &moves.column::<i64>("orders_id").unwrap(),
                &orders.column::<i64>("id").unwrap(),
            ),
            &text,
        ),
        "change column",
    );
    // dynamic time columns are accepted
    assert!(g()
        .related(
            "orders",
            Relation::new(
                &moves.column::<i64>("orders_id").unwrap(),
                &orders.column::<i64>("id").unwrap()
            ),
            orders_changed.erase(),
        )
        .since(at())
        .check()
        .is_ok());
    // empty, duplicate and root labels; no hops
    let rel = Relation::new(
        &moves.column::<i64>("orders_id").unwrap(),
        &orders.column::<i64>("id").unwrap(),
    );
    spec_err(g().related("", rel.clone(), &orders_changed), "label");
    spec_err(g().related("moves", rel.clone(), &orders_changed), "label");
    spec_err(
        g().related("o", rel.clone(), &orders_changed)
            .related("o", rel.clone(), &orders_changed),
        "label",
    );
    spec_err(g().path("o", Vec::new(), &orders_changed), "path");
    // root change column on another table
    spec_err(SinceGraph::new(&id, &orders_changed), "change column");
    spec_err(g().max_limit(0), "max_limit");
}

#[test]
fn hostile_names_stay_quoted_in_index_advice() {
    let evil = Table::new(r#"mo"ves; DROP TABLE x; --"#).unwrap();
    let id = evil.column::<i64>(r#"i"d"#).unwrap();
    let child = Table::new(r#"ch"ild"#).unwrap();
    let g = SinceGraph::new(&id, evil.column::<DateTime<Utc>>(r#"up"dated"#).unwrap()).related(
        "child",
        Relation::new(&child.column::<i64>(r#"mo"ve"#).unwrap(), &id),
        child.column::<DateTime<Utc>>("u").unwrap(),
    );
    let ddl: Vec<String> = g
        .index_advice(SinceStrategy::Exists)
        .iter()
        .map(|q| q.sql().to_owned())
        .collect();
    assert_eq!(
        ddl,
        [
            r#"CREATE INDEX IF NOT EXISTS "mo_ves; DROP TABLE x; --_up_dated_i_d_since_fa3d548b99b4" ON "mo""ves; DROP TABLE x; --" ("up""dated", "i""d")"#,
            r#"CREATE INDEX IF NOT EXISTS "ch_ild_mo_ve_u_since_6bf30e26f4d6" ON "ch""ild" ("mo""ve", "u")"#,
        ]
    );
    // long names are cut to 63 bytes with a distinguishing hash
    let long = Table::new("x".repeat(60)).unwrap();
    let key = long.column::<i64>("id").unwrap();
    let g = SinceGraph::new(&key, long.column::<DateTime<Utc>>("updated_at").unwrap());
    let sql = g.index_advice(SinceStrategy::UnionIn)[0].sql().to_owned();
    let name = sql.split('"').nth(1).unwrap();
    assert_eq!(name.len(), 63, "{sql}");
}

#[test]
fn composite_keys_use_row_values() {
    let root = Table::new("root").unwrap();
    let child = Table::new("child").unwrap();
    let (ra, rb) = (
        root.column::<i64>("a").unwrap(),
        root.column::<String>("b").unwrap(),
    );
    let rel = Relation::new(&child.column::<i64>("ra").unwrap(), &ra)
        .and(&child.column::<String>("rb").unwrap(), &rb)
        .unwrap();
    let g = SinceGraph::new(&ra, root.column::<DateTime<Utc>>("at").unwrap()).related(
        "child",
        rel,
        child.column::<DateTime<Utc>>("at").unwrap(),
    );
    let q = g.since(at());
    assert_eq!(
        q.clone()
            .strategy(SinceStrategy::UnionIn)
            .build()
            .unwrap()
            .sql(),
        r#"SELECT "root".* FROM "root" WHERE "root"."at" >= CAST($1 AS timestamptz) OR ("root"."a", "root"."b") IN (SELECT "t1"."ra", "t1"."rb" FROM "child" AS "t1" WHERE "t1"."at" >= CAST($2 AS timestamptz))"#
    );
    assert_eq!(
        q.strategy(SinceStrategy::Exists).build().unwrap().sql(),
        r#"SELECT "root".* FROM "root" WHERE "root"."at" >= CAST($1 AS timestamptz) OR EXISTS(SELECT 1 FROM "child" AS "t1" WHERE "root"."a" = "t1"."ra" AND "root"."b" = "t1"."rb" AND "t1"."at" >= CAST($2 AS timestamptz))"#
    );
}

#[test]
fn semi_join_snapshot() {
    assert_eq!(
        sql(SinceStrategy::SemiJoin),
        r#"SELECT "moves".* FROM "moves" WHERE "moves"."show" = CAST($1 AS bool) AND "moves"."id" IN (SELECT "r0"."id" FROM "moves" AS "r0" WHERE "r0"."updated_at" >= CAST($2 AS timestamp) AND ((pg_current_xact_id_if_assigned() IS NULL OR TRUE)) UNION ALL (SELECT "r0"."id" FROM "moves" AS "r0" INNER JOIN "orders" AS "t1" ON "r0"."orders_id" = "t1"."id" WHERE "t1"."updated_at" >= CAST($3 AS timestamp)) UNION ALL (SELECT "r0"."id" FROM "moves" AS "r0" INNER JOIN "orders" AS "t1" ON "r0"."orders_id" = "t1"."id" INNER JOIN "service_members" AS "t2" ON "t1"."service_member_id" = "t2"."id" WHERE "t2"."updated_at" >= CAST($4 AS timestamp)) UNION ALL (SELECT "t3"."move_id" FROM "mto_shipments" AS "t3" WHERE "t3"."updated_at" >= CAST($5 AS timestamptz)) UNION ALL (SELECT "t3"."move_id" FROM "mto_shipments" AS "t3" INNER JOIN "addresses" AS "t4" ON "t3"."pickup_address_id" = "t4"."id" WHERE "t4"."updated_at" >= CAST($6 AS timestamptz)))"#
    );
}

#[test]
fn aliases_never_shadow_a_root_named_like_them() {
    let root = Table::new("t1").unwrap();
    let child = Table::new("t2").unwrap();
    let key = root.column::<i64>("id").unwrap();
    let g = SinceGraph::new(&key, root.column::<DateTime<Utc>>("at").unwrap()).related(
        "child",
        Relation::new(&child.column::<i64>("t1_id").unwrap(), &key),
        child.column::<DateTime<Utc>>("at").unwrap(),
    );
    let sql = g
        .since(at())
        .strategy(SinceStrategy::OrJoins)
        .build()
        .unwrap()
        .sql()
        .to_owned();
    assert!(
        sql.contains(r#"FROM "t1" LEFT JOIN "t2" AS "j1" ON "t1"."id" = "j1"."t1_id""#),
        "{sql}"
    );
}
