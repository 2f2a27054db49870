//! `brewlytics report` as a user runs it: the built binary, against a real OLAP database.

mod harness;

use std::process::{Command, Output};

use brewlytics_support::testing::TestDb;
use harness::Scratch;
use sqlx::postgres::PgPoolOptions;

fn brewlytics(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_brewlytics"))
        .args(args)
        .env_remove("OLTP_DATABASE_URL")
        .env_remove("OLAP_DATABASE_URL")
        .env("BREWLYTICS_DATA_DIR", "/nonexistent/brewlytics-report-cli")
        .env("RUST_LOG", "warn")
        .output()
        .expect("running brewlytics")
}

fn stderr_lines(out: &Output) -> Vec<String> {
    String::from_utf8_lossy(&out.stderr)
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(str::to_owned)
        .collect()
}

#[test]
fn list_shows_every_question() {
    let out = brewlytics(&["report", "--list"]);
    assert!(out.status.success());
    let text = String::from_utf8(out.stdout).unwrap();
    for name in [
        "daily-revenue",
        "revenue-by-hour",
        "sales-by-category",
        "top-products",
        "top-customers",
        "sales-by-employee",
        "store-comparison",
        "average-order-value",
        "open-orders",
        "pending-items",
        "busiest-days",
        "payment-methods",
        "inventory-movement",
        "clickstream-funnel",
        "product-conversion",
    ] {
        assert!(
            text.lines().any(|l| l.starts_with(&format!("{name} "))),
            "{name} missing from:\n{text}"
        );
    }
}

#[test]
fn an_unknown_question_is_one_line_and_fails() {
    let out = brewlytics(&["report", "no-such-report"]);
    assert!(!out.status.success());
    let lines = stderr_lines(&out);
    assert_eq!(lines.len(), 1, "{lines:?}");
    assert!(lines[0].starts_with("error: unknown question \"no-such-report\""));
    assert!(out.stdout.is_empty());
}

#[test]
fn a_bad_date_is_one_line_and_fails() {
    for (flag, value) in [("--from", "2024-02-30"), ("--to", "yesterday")] {
        let out = brewlytics(&["report", "daily-revenue", flag, value]);
        assert!(!out.status.success());
        let lines = stderr_lines(&out);
        assert_eq!(lines.len(), 1, "{lines:?}");
        assert!(
            lines[0].starts_with("error: ")
                && lines[0].contains(value)
                && lines[0].contains("YYYY-MM-DD"),
            "{}",
            lines[0]
        );
    }
    let out = brewlytics(&["report", "daily-revenue", "--format", "xml"]);
    assert!(!out.status.success());
    assert_eq!(stderr_lines(&out).len(), 1);
    let out = brewlytics(&["report", "payment-methods", "--limit", "3"]);
    assert_eq!(
        stderr_lines(&out),
        ["error: report payment-methods takes no --limit"]
    );
}

#[test]
fn csv_json_and_table_from_a_real_database() {
    let db = TestDb::new("report_cli");
    let url = db.url();
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let pool = PgPoolOptions::new()
            .max_connections(1)
            .connect_with(url.connect_options().unwrap())
            .await
            .unwrap();
        brewlytics_support::migrate::olap(&pool).await.unwrap();
        sqlx::raw_sql(
            "insert into dim_store (store_key, store_id, name) values (1, 1, 'Downtown');
             insert into dim_employee (employee_key, employee_id, name) values (1, 1, 'Ana');
             insert into dim_product (product_key, product_id, name, category, price, valid_from)
                 values (1, 7, 'Mocha, large', 'coffee', 4.20, '-infinity');
             insert into fact_sales (order_item_id, order_id, date_key, customer_key, product_key,
                 employee_key, store_key, quantity, unit_price, revenue, status, ordered_at, hour_of_day)
             values
                 (1, gen_random_uuid(), 20240501, 0, 1, 1, 1, 2, 4.20, 8.40, 'completed', '2024-05-01 09:00Z', 9),
                 (2, gen_random_uuid(), 20240501, 0, 1, 1, 1, 1, 4.20, 4.20, 'cancelled', '2024-05-01 09:10Z', 9),
                 (3, gen_random_uuid(), 20240502, 0, 1, 1, 1, 1, 4.20, 4.20, 'placed', '2024-05-02 10:00Z', 10);",
        )
        .execute(&pool)
        .await
        .unwrap();
    });
    let olap = url.expose().to_owned();

    let out = brewlytics(&["report", "daily-revenue", "--olap-url", &olap]);
    assert!(out.status.success(), "{:?}", stderr_lines(&out));
    assert_eq!(
        String::from_utf8(out.stdout).unwrap(),
        "day,orders,items,revenue\n2024-05-01,1,2,8.40\n2024-05-02,1,1,4.20\n"
    );

    // An empty range still has the header.
    let out = brewlytics(&[
        "report",
        "daily-revenue",
        "--olap-url",
        &olap,
        "--from",
        "2023-01-01",
        "--to",
        "2023-01-02",
    ]);
    assert_eq!(
        String::from_utf8(out.stdout).unwrap(),
        "day,orders,items,revenue\n"
    );

    // Quoting of a name with a comma.
    let out = brewlytics(&[
        "report",
        "top-products",
        "--olap-url",
        &olap,
        "--limit",
        "1",
    ]);
    assert_eq!(
        String::from_utf8(out.stdout).unwrap(),
        "product_id,product,category,orders,items,revenue\n7,\"Mocha, large\",coffee,2,3,12.60\n"
    );

    let out = brewlytics(&[
        "report",
        "daily-revenue",
        "--olap-url",
        &olap,
        "--format",
        "json",
        "--to",
        "2024-05-01",
    ]);
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        json,
        serde_json::json!([{"day": "2024-05-01", "orders": 1, "items": 2, "revenue": "8.40"}])
    );

    let out = brewlytics(&[
        "report",
        "daily-revenue",
        "--olap-url",
        &olap,
        "--format",
        "table",
    ]);
    assert_eq!(
        String::from_utf8(out.stdout).unwrap(),
        "day         orders  items  revenue\n\
         ----------  ------  -----  -------\n\
         2024-05-01       1      2     8.40\n\
         2024-05-02       1      1     4.20\n\
         (2 rows)\n"
    );

    let scratch = Scratch::new("report");
    let file = scratch.join("busiest.csv");
    let out = brewlytics(&[
        "report",
        "busiest-days",
        "--olap-url",
        &olap,
        "--limit",
        "1",
        "--output",
        file.to_str().unwrap(),
    ]);
    assert!(out.status.success() && out.stdout.is_empty());
    let written = std::fs::read_to_string(&file).unwrap();
    assert_eq!(
        written,
        "day,day_name,orders,revenue\n2024-05-01,Wednesday,1,8.40\n"
    );
}
