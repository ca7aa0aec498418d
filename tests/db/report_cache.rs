//! Cached report rows against a real server: the same rows as the report
//! itself, kept per bound values until they expire or are invalidated.

use std::sync::Arc;
use std::time::Duration;

use pgpatterns::ops::ReportCache;
use pgpatterns::seed::sales::SalesSeed;
use pgpatterns::{column, RollupRow};

use crate::support::{client, schema};

#[tokio::test]
async fn cached_reports_are_the_reports_rows_per_bound_values() {
    let schema = schema().await;
    let c = client(&schema).await;
    let seed = SalesSeed::sample();
    seed.run(&c, |_| {}).await.unwrap();
    let tables = seed.tables();
    let dashboard = tables.dashboard(true);
    let cache: ReportCache<RollupRow> = ReportCache::new(Duration::from_secs(60));

    let cached = cache.rollup(&dashboard, &c).await.unwrap();
    assert_eq!(*cached, dashboard.fetch_all(&c).await.unwrap());
    // Served from memory: the very same rows.
    let again = cache.rollup(&dashboard, &c).await.unwrap();
    assert!(Arc::ptr_eq(&cached, &again));
    assert!(cache.bytes() > 0);

    // Another bound value is another report.
    let costco = dashboard
        .clone()
        .filter(column!(tables.table, "merchant": String).eq("Costco"));
    let filtered = cache.rollup(&costco, &c).await.unwrap();
    assert_eq!(*filtered, costco.fetch_all(&c).await.unwrap());
    assert_ne!(filtered.len(), cached.len());
    assert_eq!(cache.len(), 2);

    // A write shows once the report is invalidated.
    c.batch_execute("INSERT INTO sale (id, merchant, device, user_id, charged_amount, sold_at) VALUES (100, 'Costco', 'D9', 1, 5, '2024-01-01')")
        .await
        .unwrap();
    let stale = cache.rollup(&costco, &c).await.unwrap();
    assert!(Arc::ptr_eq(&stale, &filtered));
    cache.invalidate(&costco.build().unwrap());
    let fresh = cache.rollup(&costco, &c).await.unwrap();
    assert_eq!(*fresh, costco.fetch_all(&c).await.unwrap());
    assert_ne!(*fresh, *filtered);
}
