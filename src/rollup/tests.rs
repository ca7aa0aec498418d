//! SQL snapshots and spec validation (no database).

use super::*;
use crate::Table;
use pretty_assertions::assert_eq;
use rust_decimal::Decimal;

struct Sale {
    table: Table,
    spec: Rollup,
    merchant: Dim<String>,
    device: Dim<String>,
    total: Metric<i64>,
}

fn sale() -> Sale {
    let table = Table::new("sale").unwrap();
    let mut spec = Rollup::new(&table);
    let merchant = spec
        .dimension(&table.column::<String>("merchant").unwrap())
        .unwrap();
    let device = spec
        .dimension(&table.column::<String>("device").unwrap())
        .unwrap();
    let total = spec.metric("total", Agg::count_all()).unwrap();
    Sale {
        table,
        spec,
        merchant,
        device,
        total,
    }
}

#[test]
fn debug_sql() {
    let mut s = sale();
    s.spec.rollup([s.merchant.id(), s.device.id()]).unwrap();
    println!("{}", s.spec.build());
}
